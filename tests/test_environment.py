"""What a result records of the host: the kernels a CPU run takes decide its rounding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong.reporting.text import environment

ROOT = Path(__file__).resolve().parents[1]


def test_a_result_records_the_cpu_kernels_it_ran_with() -> None:
    env = environment()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert ("ld_preload" in env) == bool(os.environ.get("LD_PRELOAD"))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the preloaded library")
def test_mkl_intel_path_runs_the_command_with_its_library_preloaded_and_recorded(tmp_path: Path) -> None:
    code = ("import json, torch; from lifelong.reporting.text import environment; "
            "a = torch.arange(12.).reshape(3, 4); print(json.dumps([environment(), (a @ a.T).tolist()]))")
    done = subprocess.run([str(ROOT / "scripts" / "mkl-intel-path.sh"), sys.executable, "-c", code],
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}, capture_output=True, text=True,
                          check=True)
    env, product = json.loads(done.stdout)
    lib = tmp_path / "lifelong" / "libmkl-intel-path.so"
    assert lib.exists() and env["ld_preload"].split(":")[0] == str(lib)
    a = torch.arange(12.).reshape(3, 4)
    assert product == (a @ a.T).tolist()  # MKL still multiplies: small integers, exact on any path
    again = subprocess.run([str(ROOT / "scripts" / "mkl-intel-path.sh"), "true"],
                           env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}, capture_output=True, check=True)
    assert again.returncode == 0 and not list((tmp_path / "lifelong").glob("*.c"))  # built once, no leftovers
