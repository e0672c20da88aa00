"""Resident memory of a stream built from a large CSV file: the loaders stream it, they never hold it whole.

    python benchmarks/data_memory.py                      # a 1 GiB CSV, pyarrow's reader (about 3 minutes)
    python benchmarks/data_memory.py --reader csv-module  # Python's csv module instead (slower)
    python benchmarks/data_memory.py --size-mb 64 --quick # a smoke test

Generates (once) a CSV of FEATURES float columns, a label (20 classes, a fixed linear rule of the
features) and a domain column (5 domains in blocks of rows) in $TMPDIR/lifelong-bench/, then in a
fresh child process, with one torch thread: imports, one Adam step of a small MLP (torch's own
start-up cost, before any data), reads and cuts it into 5 tasks by domain
(`--data csv:FILE,label=label,task=domain`), makes one shuffled pass over every task's training rows
in batches of 128, trains a small MLP on task 0 for one epoch and scores every task's test rows.
Peak resident memory (VmHWM, reset between stages) is recorded after each stage. Writes
results/data-memory.json (every run, its configuration, library versions and hardware); `--resume`
keeps runs already there with the same configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "results" / "data-memory.json"
FEATURES, CLASSES, DOMAINS = 16, 20, 5


def generate(path: Path, size_mb: int, seed: int = 0) -> dict[str, Any]:
    """Write a CSV of about `size_mb` MiB in chunks (never whole in memory); returns its facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rule = rng.normal(size=(FEATURES, CLASSES))
    target = size_mb * 2**20
    chunk = 100_000
    tmp = path.with_suffix(".partial")
    rows = 0
    with open(tmp, "w") as f:
        f.write(",".join([f"f{i}" for i in range(FEATURES)] + ["label", "domain"]) + "\n")
        while f.tell() < target:
            x = rng.normal(size=(chunk, FEATURES)).astype(np.float32)
            y = (x @ rule).argmax(1)
            domain = min(DOMAINS - 1, f.tell() * DOMAINS // target)  # blocks of rows, in file order
            lines = [",".join(f"{v:.5f}" for v in row) for row in x.tolist()]
            f.write("".join(f"{line},c{label},d{domain}\n" for line, label in zip(lines, y.tolist(), strict=True)))
            rows += chunk
    os.replace(tmp, path)
    return {"file": str(path), "bytes": path.stat().st_size, "rows": rows}


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def _stage(log: list[dict[str, Any]], name: str, started: float) -> float:
    status = _status()
    log.append({"stage": name, "seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": status["VmHWM"],
                "rss_mib": status["VmRSS"], "rss_anon_mib": status.get("RssAnon"),
                "rss_file_mib": status.get("RssFile")})
    print(json.dumps(log[-1]), file=sys.stderr, flush=True)
    try:  # reset the peak, so the next stage's peak is its own
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return time.perf_counter()


def child(file: str, reader: str, quick: bool) -> dict[str, Any]:
    """The measured process: one stage after another, peak RSS after each."""
    log: list[dict[str, Any]] = []
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from lifelong.data import BatchLoader, TaskData
    from lifelong.data.files import CsvSource, Cut, describe, file_stream
    from lifelong.learner import Learner, LearnerConfig
    from lifelong.models import MLP, ContinualClassifier
    from lifelong.strategies import build_strategy

    if reader == "csv-module":
        CsvSource.chunks = CsvSource._chunks_csv_module  # type: ignore[method-assign]
    started = _stage(log, "imports (python, torch, lifelong)", started)
    torch.manual_seed(0)
    warm = MLP(FEATURES, (64,), CLASSES)
    optimizer = torch.optim.Adam(warm.parameters())  # its first use imports torch._dynamo and sympy: ~70 MiB
    torch.nn.functional.cross_entropy(warm(torch.randn(128, FEATURES)), torch.zeros(128, dtype=torch.long)).backward()
    optimizer.step()
    started = _stage(log, "torch's first Adam step, no data (what any training pays)", started)
    stream = file_stream(f"csv:{file},label=label,task=domain", Cut(tasks=None))
    started = _stage(log, "read and cut into tasks", started)
    batches = 0
    for task in stream:
        loader = BatchLoader([TaskData(task.train, task.id)], 128, shuffle=True,
                             generator=torch.Generator().manual_seed(0), max_samples=20_000 if quick else None)
        for _ in loader:
            batches += 1
    started = _stage(log, "one shuffled pass over every task's training rows", started)
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(FEATURES, (64,), stream.num_classes), len(stream), stream.num_classes)
    learner = Learner(model, build_strategy("naive"), LearnerConfig(epochs=1, batch_size=128))
    learner.fit(stream, 0)
    accuracy = learner.evaluate(stream)
    started = _stage(log, "train task 0 one epoch, score every task's test rows", started)
    return {"stages": log, "batches": batches, "rows": sum(len(t.train) + len(t.test) for t in stream),
            "tasks": describe(stream).splitlines(),
            "accuracy_after_task_0": [round(a, 4) for a in accuracy], "spilled": type(stream[0].train.source).__name__}


def table(runs: list[dict[str, Any]]) -> str:
    """Peak resident memory per stage (MiB) of each saved run, as a Markdown table."""
    stages = list(dict.fromkeys(s["stage"] for r in runs for s in r["stages"]))
    head = ["reader", "file", "rows", *stages, "peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        by = {s["stage"]: s for s in r["stages"]}
        rows = r.get("rows") or sum(int(n) for line in r["tasks"][1:]  # older runs: from the tasks' sizes
                                    for n in re.findall(r"(\d+) (?:train|test)", line))
        cells = [r["config"]["reader"], f"{r['file']['bytes'] / 2**20:,.0f} MiB", f"{rows:,}"]
        cells += [f"{by[s]['peak_rss_mib']} ({by[s]['seconds']:.0f} s)" if s in by else "-" for s in stages]
        lines.append("| " + " | ".join([*cells, f"**{r['peak_rss_mib']}**"]) + " |")
    env = runs[0]["environment"]
    return "\n".join(lines) + (f"\n\n`results/data-memory.json`: {env['cpu']}, torch {env['torch']}, peak resident "
                               "memory in MiB after each stage (its wall time in brackets, on a shared machine).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--reader", choices=("pyarrow", "csv-module"), default="pyarrow")
    parser.add_argument("--quick", action="store_true", help="one pass capped at 20,000 rows per task")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "lifelong-bench"))
    parser.add_argument("--table", action="store_true", help="print the Markdown table of the saved runs")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(RESULT.read_text())["runs"]))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.reader, args.quick)))
        return 0
    from lifelong.reporting import environment, write_json

    config = {"size_mb": args.size_mb, "reader": args.reader, "quick": args.quick, "features": FEATURES,
              "classes": CLASSES, "domains": DOMAINS, "spec": "csv:FILE,label=label,task=domain"}
    done = json.loads(RESULT.read_text()) if RESULT.exists() else {"runs": []}
    if args.resume and any(r["config"] == config for r in done["runs"]):
        print(f"already measured: {config}")
        return 0
    path = Path(args.dir) / f"big-{args.size_mb}mb.csv"
    facts: dict[str, Any] = ({"file": str(path), "bytes": path.stat().st_size} if path.exists()
                             else generate(path, args.size_mb))
    command = [sys.executable, __file__, "--child", str(path), "--reader", args.reader] + (["--quick"] if args.quick
                                                                                           else [])
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    run = {"config": config, "file": facts, "wall_seconds": round(time.perf_counter() - started, 1),
           "peak_rss_mib": max(s["peak_rss_mib"] for s in measured["stages"]), **measured,
           "environment": environment()}
    done["runs"] = [r for r in done["runs"] if r["config"] != config] + [run]
    write_json(RESULT, done)
    print(f"{facts['bytes'] / 2**20:.0f} MiB CSV, {args.reader}: peak resident memory {run['peak_rss_mib']} MiB")
    for s in measured["stages"]:
        print(f"  {s['stage']}: {s['seconds']} s, peak {s['peak_rss_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
