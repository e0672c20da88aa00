"""The progress files of `benchmarks/poisoning.py`: every measured row appended as it is measured (one
JSON row per line, the first line the job's configuration), so that `--resume` continues an interrupted
run and `--rerun` measures chosen defences again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def progress_file(work: Path, name: str, seed: int, header: dict[str, Any]) -> tuple[Path, dict[tuple[Any, ...], Any]]:
    """The job's progress file (one JSON row per line, the first the configuration) and the rows it
    already holds, by (attack, rate, defence). A file from another configuration is an error."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}-{seed}.jsonl"
    done: dict[tuple[Any, ...], Any] = {}
    if path.exists():
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines and lines[0] != header:
            raise SystemExit(f"{path} holds rows of another configuration: delete it, or run without --resume")
        done = {(r["attack"], r["rate"], r["defence"]): r for r in lines[1:]}
    else:
        path.write_text(json.dumps(header) + "\n")
    return path, done


def rerun_progress(progress: Path, out: Path, defences: Sequence[str], known: Sequence[str], tuning: dict[str, Any],
                   attacks: Sequence[str] | None = None) -> None:
    """Drop `defences`' rows (of `attacks` only, when given; the clean row always) from the progress
    files (made from the results file's rows where there are none), so that --resume measures them
    again with today's code and keeps every other row."""
    unknown = set(defences) - set(known) - {"oracle"}
    if unknown:
        raise SystemExit(f"unknown defence(s) {sorted(unknown)}; choose from {', '.join(known)}")
    if not any(progress.glob("*.jsonl")) and out.exists():
        by_job: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in json.loads(out.read_text())["rows"]:
            by_job.setdefault((row["world"], row["seed"]), []).append(row)
        for (world, seed), rows in by_job.items():
            header = {"world": world, "seed": seed, "size": None, "tuning": tuning, "defences": list(known)}
            (progress / f"{world}-{seed}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in [header, *rows]))
    for path in progress.glob("*.jsonl"):
        lines = path.read_text().splitlines()
        again = [json.loads(line) for line in lines[1:]]
        kept = [lines[0]] + [line for line, r in zip(lines[1:], again, strict=True) if r["defence"] not in defences
                             or (attacks is not None and r["attack"] not in attacks and r["attack"] != "clean")]
        path.write_text("\n".join(kept) + "\n")
