"""Continual RL results -> figures: every task's normalised return over the agent's lifetime.

Self-contained (matplotlib's Agg canvas, no pyplot, no global state), taking the plain result dicts
of `lifelong.agents.continual.run_rl` (their `curve`: every task's return every few thousand steps).
One panel per method; one line per task, the mean over seeds with a band from the lowest to the
highest seed; dotted verticals where the next task starts.

>>> curve = [{"step": s, "training": s // 200, "normalised": [0.1 * s / 100, 0.0]} for s in (100, 200, 300, 400)]
>>> run = {"strategy": "naive", "curve": curve, "config": {"steps": 200, "seed": 0},
...        "tasks": [{"name": "a"}, {"name": "b"}]}
>>> fig = return_curves([run], "demo")
>>> len(fig.axes)
1
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")  # Okabe-Ito
STYLES = ("-", "--", "-.", ":")  # a second cue beside colour, for grey print and colour-blind readers
DPI = 100


def curve_table(runs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(steps [P], normalised returns [seeds, P, tasks]) of runs of one method; the runs must share
    their curve points (same config but the seed)."""
    if not runs or not runs[0].get("curve"):
        raise ValueError("no curve in these runs (run them with curve_every > 0)")
    steps = np.array([p["step"] for p in runs[0]["curve"]])
    values = []
    for r in runs:
        if [p["step"] for p in r["curve"]] != steps.tolist():
            raise ValueError("the runs' curves have different points; compare runs of one configuration")
        values.append([p["normalised"] for p in r["curve"]])
    return steps, np.asarray(values, dtype=float)


def return_curves(runs: Sequence[dict[str, Any]], title: str, methods: Sequence[str] | None = None) -> Figure:
    """A figure of every task's normalised return over environment steps, one panel per method."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_method.setdefault(r["strategy"], []).append(r)
    names = [m for m in (methods or by_method) if m in by_method]
    if not names:
        raise ValueError("no runs to plot")
    task_names = [t["name"] for t in runs[0]["tasks"]]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        steps, values = curve_table(by_method[name])
        steps_k = steps / 1000
        for j, task in enumerate(task_names):
            mean = values[:, :, j].mean(0)
            ax.plot(steps_k, mean, STYLES[j % len(STYLES)], color=PALETTE[j % len(PALETTE)], label=task, lw=1.6)
            ax.fill_between(steps_k, values[:, :, j].min(0), values[:, :, j].max(0),
                            color=PALETTE[j % len(PALETTE)], alpha=0.15, lw=0)
        per_task = by_method[name][0]["config"]["steps"]
        if name != "multitask":
            for boundary in range(1, len(task_names)):
                ax.axvline(boundary * per_task / 1000, color="grey", ls=":", lw=1)
        ax.set_title(f"{name} ({len(values)} seed{'s' if len(values) > 1 else ''})", fontsize=10)
        ax.set_xlabel("environment steps (thousands)")
        ax.set_ylim(-0.1, 1.2)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("normalised return")
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
