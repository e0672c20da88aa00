"""Results -> text: the run table, the comparison table (mean +- std over seeds), JSON files."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lifelong import atomic

METRICS = ("average_accuracy", "learning_accuracy", "average_retention", "forgetting", "bwt", "fwt")
SHORT = {"average_accuracy": "final acc", "learning_accuracy": "learning acc",
         "average_retention": "retention", "forgetting": "forgetting", "bwt": "BWT", "fwt": "FWT",
         "specialist_retention": "vs specialist", "seconds": "seconds", "recency_bias": "recency bias",
         "state_bytes": "state kB"}
CLASS_IL_KEYS = ("average_accuracy", "learning_accuracy", "average_retention", "recency_bias", "state_bytes", "seconds")


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded in every result."""
    import torch

    import lifelong

    cpu = cpuinfo("model name") or platform.processor() or platform.machine()
    return {"lifelong": lifelong.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpu_vendor": cpuinfo("vendor_id"),
            "torch_threads": torch.get_num_threads(), "command": " ".join(sys.argv),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            # the kernels a CPU run takes decide its rounding: ATen's instruction set, and a preloaded
            # library such as scripts/mkl-intel-path.sh's (MKL's vendor path)
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **({"ld_preload": os.environ["LD_PRELOAD"]} if os.environ.get("LD_PRELOAD") else {}),
            # a run's seconds carry whatever shared its cores (three runs on two cores once read as a 19 %
            # cost of EWC): the 1-, 5- and 15-minute load averages when the result is written say how busy
            "load_average": load_average()}


def load_average() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages (runnable processes), None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpuinfo(field: str) -> str | None:
    """One field of the first CPU in Linux's /proc/cpuinfo (`model name`, `vendor_id`), None where absent."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.split(":", 1)[0].strip() == field), None)
    except OSError:
        return None


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write a result as JSON, atomically (numpy scalars and tuples converted)."""
    return atomic.write_json(path, obj, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_run(result: dict[str, Any]) -> str:
    """The accuracy matrix and the metrics as plain text."""
    matrix = result["accuracy_matrix"]
    t = len(matrix)
    head = "after \\ on " + " ".join(f"{j:>6}" for j in range(t))
    lines = [f"{result['strategy']} on {result['benchmark']} ({result['scenario']}-incremental, "
             f"{result['eval_split']} split)", "", head]
    for i, row in enumerate(matrix):
        lines.append(f"{'task ' + str(i):>11} " + " ".join(f"{_fmt(v):>6}" for v in row))
    lines.append("")
    for key in (*METRICS, "specialist_retention"):
        if key in result:
            lines.append(f"{SHORT[key]:>14}: {_fmt(result[key])}")
    lines.append(f"{'seconds':>14}: {result['seconds']:.1f}")
    return "\n".join(lines)


def aggregate(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by strategy (in first-seen order); mean and std of each metric over seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["strategy"], []).append(r)
    rows = []
    for name, runs in groups.items():
        row: dict[str, Any] = {"strategy": name, "seeds": [r["config"]["seed"] for r in runs]}
        for key in (*METRICS, "seconds", "recency_bias", "state_bytes"):
            if any(r.get(key) is None for r in runs):  # recency bias exists in class-IL only
                continue
            vals = np.array([r[key] for r in runs], dtype=np.float64)
            row[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        rows.append(row)
    return rows


def format_compare(rows: Sequence[dict[str, Any]], keys: Sequence[str] = (
        "average_accuracy", "learning_accuracy", "average_retention", "forgetting", "seconds")) -> str:
    """A Markdown table of mean +- std per strategy."""
    header = "| strategy | seeds | " + " | ".join(SHORT[k] for k in keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 2)]
    for row in rows:
        cells = []
        for k in keys:
            if k not in row:
                cells.append("-")
                continue
            m, s = row[k]["mean"], row[k]["std"]
            if k == "state_bytes":  # the same for every seed: no spread to show
                cells.append(f"{m / 1000:.0f}")
                continue
            digits = 1 if k == "seconds" else 3
            cells.append(_fmt(m, digits) + (f" ± {_fmt(s, digits)}" if len(row["seeds"]) > 1 else ""))
        lines.append(f"| {row['strategy']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
