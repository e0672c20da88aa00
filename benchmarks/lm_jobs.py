"""The result files of `benchmarks/lm.py`: one entry per run, keyed by its configuration, shared by
processes under a lock, and the `--jobs N` runner that trains N configurations at a time, one process each."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from lm_report import _shown

from lifelong.reporting import write_json


def _strategy(name: str) -> str:
    """Runs saved before the merge with main named the language-model distillation `distill` (main's
    `distill` is the classifier and agent version): the same strategy as `lm-distill` now."""
    return "+".join("lm-distill" if part == "distill" else part for part in name.split("+"))


def run_key(run: dict[str, Any]) -> str:
    """What makes two runs the same run: model, strategy, its shown options, seed, split and data."""
    c = run["config"]
    return json.dumps([c["model"], _strategy(c["strategy"]), _shown(c), c["seed"], c["eval_split"], c["data"]],
                      sort_keys=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held while a process re-reads and rewrites a result file, so that processes sharing one file
    (parallel jobs, two `run` commands) each add their runs without dropping the others'."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def save_run(out: Path, result: dict[str, Any]) -> None:
    """`result` into `out`, replacing a run with the same key; other processes may have added runs since
    this one read the file, so it is read again under the lock."""
    with locked(out):
        on_disk = load(out)
        on_disk["runs"] = [r for r in on_disk["runs"] if run_key(r) != run_key(result)] + [result]
        write_json(out, on_disk)


def merge_runs(out: Path, setting: str, split: str, files: list[Path]) -> tuple[int, Counter[str]]:
    """The runs of `files` into `out`; a run already there with the same configuration is kept.
    Returns how many were added and, by "setting/split", the runs left out for being of another
    setting or split (so that a caller can say so instead of adding nothing in silence)."""
    other: Counter[str] = Counter()
    with locked(out):
        saved = load(out)
        done = {run_key(r) for r in saved["runs"]}
        added = 0
        for part in files:
            for run in load(part)["runs"]:
                run_setting, run_split = run.get("setting", setting), run["config"]["eval_split"]
                if run_setting != setting or run_split != split:
                    other[f"{run_setting}/{run_split}"] += 1
                    continue
                if run_key(run) not in done:
                    saved["runs"].append(run)
                    done.add(run_key(run))
                    added += 1
        if added:
            write_json(out, saved)
    return added, other


def _claim(path: Path) -> IO[str] | None:
    """An exclusive, non-blocking lock on `path`, held (by the open file) until it is closed; None where
    another process holds it: that process is running the job now."""
    import fcntl

    handle = open(path, "w")  # noqa: SIM115  (the open file holds the lock: the caller closes it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_processes(queue: list[tuple[str, list[str], Callable[[], bool]]], jobs: int, parts: Path, out: Path,
                  setting: str, split: str) -> int:
    """Each (name, command, wanted) of `queue` as its own process, `jobs` at a time, logging to
    `parts/<name>.log` and writing `parts/<name>.json`, merged into `out` as each finishes. 1 if any failed.

    Two `--jobs` commands may share `out`: just before a job starts, `wanted()` (which re-reads `out`)
    says whether it is still missing, and a lock on `parts/<name>.claim` skips a job that the other
    command is running now, so neither trains a run twice nor truncates the other's log."""
    print(f"[{time.strftime('%H:%M:%S')}] {len(queue)} job(s), {jobs} at a time; logs in {parts}/", flush=True)
    queue = list(queue)
    running: dict[str, tuple[subprocess.Popen, IO[str]]] = {}
    failed = []
    while queue or running:
        while queue and len(running) < jobs:
            name, command, wanted = queue.pop(0)
            claim = _claim(parts / f"{name}.claim")
            if claim is None or not wanted():
                if claim is not None:
                    claim.close()
                why = "running in another process" if claim is None else "done meanwhile"
                print(f"[{time.strftime('%H:%M:%S')}] {name}: skipped, {why}", flush=True)
                continue
            with open(parts / f"{name}.log", "w") as log:
                running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), claim)
        time.sleep(0.5)
        for name, (proc, claim) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                failed.append(name)
            merge_runs(out, setting, split, [parts / f"{name}.json"])
            claim.close()  # after the merge: a command that claims it next finds the run in `out`
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {'done' if proc.returncode == 0 else 'FAILED'} "
                  f"({len(queue)} waiting, {len(running)} running)", flush=True)
    if failed:
        print(f"{len(failed)} job(s) failed: {', '.join(failed)} (see their logs)", file=sys.stderr)
    return 1 if failed else 0
