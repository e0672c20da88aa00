"""A short check that training runs on a GPU: a 3-task EWC run on cuda (beside the same run on the CPU),
and, when there are two GPUs, the same run under torchrun with two nccl ranks (one GPU per rank).

    python benchmarks/gpu_check.py            # prints a table, writes results/gpu-check.json

On a machine without CUDA it says so and exits 0 (nothing to check). It checks that the model, the
strategy's state and the result say cuda, and that the CPU and CUDA runs reach similar accuracy
(they are not bit-identical: the kernels differ).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lifelong.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "gpu-check.json"
ARGS = ["--benchmark", "split-digits", "--tasks", "3", "--scenario", "class", "--epochs", "3", "--quiet", "--json"]


def one_run(device: str) -> dict[str, Any]:
    """The 3-task EWC run in this process on `device`; where its tensors ended up."""
    from lifelong.data.streams import StreamConfig
    from lifelong.devices import tensors_of
    from lifelong.learner import LearnerConfig
    from lifelong.models import ModelConfig
    from lifelong.run import RunConfig, run

    start = time.perf_counter()
    result = run(RunConfig(StreamConfig("split-digits", "class", 3), "ewc", {},
                           LearnerConfig(epochs=3, device=device), ModelConfig(hidden=(64,))))
    devices = {str(t.device) for t in [*result.model.parameters(), *tensors_of(result.strategy.state_dict())]}
    return {"run": f"single process, {device}", "device": result.record["device"], "tensors_on": sorted(devices),
            "average_accuracy": result.record["average_accuracy"], "seconds": round(time.perf_counter() - start, 2)}


def two_ranks() -> dict[str, Any]:
    """The same run under torchrun, two nccl ranks, one GPU each (rank 0's JSON result)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lifelong", "run",
                   "--strategy", "ewc", *ARGS, "--hidden", "64", "--device", "cuda", "--distributed", "--out", str(out)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        if done.returncode != 0:
            return {"run": "torchrun, 2 ranks, nccl", "error": done.stderr[-2000:]}
        record = json.loads(out.read_text())
        return {"run": "torchrun, 2 ranks, nccl", "device": record["device"], "tensors_on": [record["device"]],
                "average_accuracy": record["average_accuracy"], "seconds": round(time.perf_counter() - start, 2)}


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check")
        return 0
    rows = [one_run("cpu"), one_run("cuda")]
    if torch.cuda.device_count() >= 2:
        rows.append(two_ranks())
    print(f"{'run':32} {'device':8} {'avg acc':>9} {'seconds':>8}  tensors on")
    for r in rows:
        if "error" in r:
            print(f"{r['run']:32} FAILED: {r['error'].splitlines()[-1] if r['error'] else ''}")
            continue
        acc, tensors = r["average_accuracy"], ", ".join(r["tensors_on"])
        print(f"{r['run']:32} {r['device']:8} {acc:9.3f} {r['seconds']:8.2f}  {tensors}")
    ok = all("error" not in r for r in rows) and all(d.startswith("cuda") for r in rows[1:] for d in r["tensors_on"])
    write_json(OUT, {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                     "torch": torch.__version__, "cuda": torch.version.cuda, "ok": ok, "runs": rows})
    print(f"written to {OUT.relative_to(ROOT)}; {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
