"""lifelong's EWC and Avalanche's, side by side in one run, on the peer's own ground: 5-task Permuted
Fashion-MNIST, MLP 784-400-400-10 (no dropout), Adam 1e-3, batch 128, 1 epoch, test split (issue 18).

Avalanche is not a dependency of lifelong: it runs in its own virtual environment (`--venv`, made by
`--setup`: torch 2.14.1 + torchvision 0.29.1, the pair that imports here, and avalanche-lib 0.6.0),
through benchmarks/peer_avalanche_worker.py, on the very tensors lifelong trains on (saved per seed).
Both sides score with the same loop; one torch thread each, one run at a time.

    python benchmarks/peer_avalanche.py --setup              # once: builds the venv (about 6 GB)
    python benchmarks/peer_avalanche.py --seeds 0,1,2        # results/peer-avalanche.json

Runs: Avalanche EWC (lambda 1000, its defaults: mode "separate", squared mini-batch-mean Fisher, the
optimizer's state kept across experiences) and Naive, against lifelong's `ewc` and `naive` with their
defaults; `--runs` picks some, `--resume` skips the ones already in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ewc_diagonal import run_variant

from lifelong.data import StreamConfig, build_stream
from lifelong.evaluation.functional import summary
from lifelong.reporting import environment, write_json

ROOT = Path(__file__).resolve().parent.parent
VENV = Path.home() / ".cache" / "lifelong" / "avalanche-venv"
PINS = ("torch==2.14.1", "torchvision==0.29.1", "avalanche-lib==0.6.0")
RUNS: dict[str, dict[str, Any]] = {
    "avalanche-ewc": {"side": "avalanche", "args": ["--strategy", "ewc", "--ewc-lambda", "1000"]},
    "avalanche-naive": {"side": "avalanche", "args": ["--strategy", "naive"]},
    "avalanche-ewc-fresh-optimizer": {"side": "avalanche", "args": ["--strategy", "ewc", "--ewc-lambda", "1000",
                                                                    "--reset-optimizer"]},
    "avalanche-ewc-dropout-0.5": {"side": "avalanche", "args": ["--strategy", "ewc", "--ewc-lambda", "1000",
                                                                "--dropout", "0.5"]},
    "lifelong-ewc": {"side": "lifelong", "variant": "ewc"},
    "lifelong-ewc-300": {"side": "lifelong", "variant": "ewc-300"},  # the library's default strength before
    "lifelong-ewc-dropout-0.5": {"side": "lifelong", "variant": "ewc-dropout-0.5"},
    # the two other Fisher kinds at the strengths that tied the default on validation (docs/consolidation.md 1)
    "lifelong-ewc-batched-30000": {"side": "lifelong", "variant": "ewc-batched-30000"},
    "lifelong-ewc-true-300": {"side": "lifelong", "variant": "ewc-true-300"},
    "lifelong-naive": {"side": "lifelong", "variant": "naive"},
}


def setup(venv: Path) -> None:
    """Make Avalanche's own environment (pip takes torch and torchvision from this machine's disk)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PINS], check=True)


def save_tasks(seed: int, path: Path) -> None:
    """The stream lifelong builds for this seed, as plain tensors (train and test per task)."""
    stream = build_stream(StreamConfig("permuted-fmnist", "domain", 5, seed=seed))
    parts: dict[str, list] = {"train": [], "test": []}
    for task in stream:
        for split, data in (("train", task.train), ("test", task.test)):
            x, y = data.get_batch(torch.arange(len(data)))
            parts[split].append((x.contiguous(), y.contiguous()))
    torch.save(parts, path)


def run_avalanche(venv: Path, data: Path, seed: int, args: list[str], threads: int) -> dict[str, Any]:
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no Avalanche environment at {venv}; make it with: python {__file__} --setup")
    command = [str(python), str(Path(__file__).with_name("peer_avalanche_worker.py")), "--data", str(data),
               "--seed", str(seed), "--threads", str(threads), *args]
    env = {**os.environ, "PYTHONPATH": ""}  # nothing of lifelong's on its path
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update(summary(np.array(out["accuracy_matrix"])))
    out["command"] = " ".join(command)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="make Avalanche's environment and exit")
    p.add_argument("--venv", type=Path, default=VENV)
    p.add_argument("--runs", default="avalanche-ewc,lifelong-ewc,avalanche-naive,lifelong-naive")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "peer-avalanche.json")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    if args.setup:
        setup(args.venv)
        return 0
    torch.set_num_threads(args.threads)
    unknown = [r for r in args.runs.split(",") if r not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {unknown}; known: {', '.join(RUNS)}")
    runs = json.loads(args.out.read_text())["runs"] if args.resume and args.out.exists() else []
    done = {(r["run"], r["seed"]) for r in runs}
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "tasks.pt"
            for name in args.runs.split(","):
                if (name, seed) in done:
                    continue
                spec = RUNS[name]
                t0 = time.perf_counter()
                if spec["side"] == "avalanche":
                    if not data.exists():
                        save_tasks(seed, data)
                    r = run_avalanche(args.venv, data, seed, spec["args"], args.threads)
                else:
                    r = run_variant(spec["variant"], seed, "test", 5, 1)
                r.update({"run": name, "seed": seed, "wall_seconds": time.perf_counter() - t0})
                runs.append(r)
                print(f"{name} seed {seed}: final {r['average_accuracy']:.3f} retention {r['average_retention']:.3f} "
                      f"learning {r['learning_accuracy']:.3f} ({r['seconds']:.0f} s, "
                      f"training {r['train_seconds']:.0f} s)", flush=True)
                write_json(args.out, {"setting": "permuted-fmnist, 5 tasks, MLP 784-400-400-10, Adam 1e-3, batch 128, "
                                      "1 epoch, no dropout, test split", "runs": runs, "environment": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
