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

from lifelong.reporting.text import cpuinfo, environment

ROOT = Path(__file__).resolve().parents[1]


def test_a_result_records_the_cpu_kernels_it_ran_with() -> None:
    env = environment()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert ("ld_preload" in env) == bool(os.environ.get("LD_PRELOAD"))
    if env["cpu_vendor"] is not None:  # x86 Linux: the vendor decides MKL's kernels (scripts/mkl-intel-path.sh)
        assert f"vendor_id\t: {env['cpu_vendor']}" in Path("/proc/cpuinfo").read_text()


def test_cpuinfo_reads_one_named_field_and_none_where_it_is_missing() -> None:
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo on this system")
    line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("processor"))
    assert cpuinfo("processor") == line.split(":", 1)[1].strip() == "0"
    assert cpuinfo("no such field") is None
    if cpuinfo("model name") is not None:
        assert cpuinfo("model") != cpuinfo("model name")  # the field's whole name, not a prefix of another


def test_a_result_records_the_load_average_the_kernel_reports() -> None:
    if not Path("/proc/loadavg").exists():
        pytest.skip("no /proc/loadavg on this system")
    for _ in range(5):  # the kernel updates it every 5 s: read it on both sides of the call until they agree
        before = Path("/proc/loadavg").read_text().split()[:3]
        recorded = environment()["load_average"]
        if Path("/proc/loadavg").read_text().split()[:3] == before:
            # os.getloadavg reads the kernel's 11-bit fixed-point counters exactly and rounds them here, while
            # /proc/loadavg adds 10/2048 (not 0.005) and truncates: the two may differ by one in the last digit
            assert all(abs(r - float(v)) <= 0.0101 for r, v in zip(recorded, before, strict=True))
            assert len(recorded) == 3 and all(v >= 0 for v in recorded)
            return
    pytest.fail("/proc/loadavg changed on every try")


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
