"""Kill a run with SIGKILL between tasks, resume it, and get the uninterrupted run's matrix."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["run", "--benchmark", "permuted-digits", "--tasks", "3", "--epochs", "3", "--hidden", "64",
        "--strategy", "ewc+replay", "--memory", "100", "--dropout", "0.2", "--threads", "1", "--quiet", "--json",
        "--seed", "4"]


def _lifelong(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lifelong", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_killed_and_resumed_run_gives_the_same_matrix(tmp_path):
    whole = _lifelong(*ARGS)
    expected = json.loads(whole.communicate(timeout=300)[0])

    ckpt = tmp_path / "ckpt"
    victim = _lifelong(*ARGS, "--checkpoint-dir", str(ckpt))
    progress = ckpt / "progress.pt"
    deadline = time.time() + 300
    while not progress.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert progress.exists(), victim.communicate()[1]
    os.kill(victim.pid, signal.SIGKILL)  # dies during the second task
    victim.communicate()
    # it really died mid-run (a victim that finished first would make the comparison below vacuous)
    assert victim.returncode == -signal.SIGKILL, victim.returncode
    import torch

    assert torch.load(progress, weights_only=False)["task"] < 2  # tasks completed < T
    resumed = _lifelong(*ARGS, "--resume", str(ckpt))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["accuracy_matrix"] == expected["accuracy_matrix"]  # bit-identical on CPU
    assert len(result["per_task"]) == 3


def test_resume_refuses_another_configuration_and_a_corrupt_file(tmp_path):
    ckpt = tmp_path / "ckpt"
    done = _lifelong(*ARGS, "--checkpoint-dir", str(ckpt))
    assert done.wait(timeout=300) == 0
    other = _lifelong(*[a if a != "4" else "5" for a in ARGS], "--resume", str(ckpt))
    assert other.wait(timeout=300) == 1 and "another configuration" in other.stderr.read()
    Path(ckpt / "progress.pt").write_bytes(b"not a checkpoint")
    broken = _lifelong(*ARGS, "--resume", str(ckpt))
    assert broken.wait(timeout=300) == 1 and "not a readable" in broken.stderr.read()


@pytest.mark.parametrize("missing", ["nowhere"])
def test_resume_without_progress_says_what_to_do(tmp_path, missing):
    proc = _lifelong(*ARGS, "--resume", str(tmp_path / missing))
    assert proc.wait(timeout=300) == 1 and "--checkpoint-dir" in proc.stderr.read()
