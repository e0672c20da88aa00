"""Results -> figures: the accuracy matrix, each task across the stream, strategies side by side,
learning accuracy beside retention, importance histograms, control returns.

Every function takes plain result dicts (the `record` of what `lifelong.run.run` returns) and returns a matplotlib
`Figure` drawn by the Agg canvas: no pyplot, no global state, no window, so it works on a server and
in threads. `save` writes one as a PNG of exactly `figsize * DPI` pixels.

Style: values in percent; `cividis` for magnitudes (its lightness rises monotonically, so it reads
the same in grey and to colour-blind readers); the Okabe-Ito palette with a distinct marker and
hatch per series where categories must be told apart. Figure sizes grow with the number of tasks so
that tick labels do not overlap at 10 or 20 tasks (tests check this from the text extents).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 100
MAGNITUDE = "cividis"  # heatmaps
ORDER = "viridis"  # one line per task: early tasks dark, late ones light
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")  # Okabe-Ito
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("", "//", "..", "xx")
_ORDER_CMAP = ListedColormap(colormaps[ORDER](np.linspace(0.0, 0.9, 256)))
MAX_LABEL = 24  # characters of a task name shown on an axis
MAX_LEGEND = 10  # more tasks than this: a colour bar instead of a legend
MAX_HISTOGRAMS = 12  # parameter tensors shown, the largest first


def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) on the Agg canvas with constrained layout, so labels are never clipped. Sizes
    are rounded up to quarter inches: exact in binary, so the PNG has exactly figsize * DPI pixels."""
    width, height = math.ceil(width * 4) / 4, math.ceil(height * 4) / 4
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as a PNG of exactly figsize * DPI pixels (no tight bbox: sizes stay as set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": "lifelong"})
    return path


def text_colour(background: Any) -> str:
    """Black or white, whichever reads better on an RGB(A) background (by relative luminance)."""
    red, green, blue = background[:3]
    return "white" if 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.5 else "black"


def is_control(result: dict[str, Any]) -> bool:
    return "return_matrix" in result


def value_label(result: dict[str, Any]) -> str:
    if is_control(result):
        return "normalised return (%; 0 random, 100 expert)"
    return "accuracy (%)"


def task_labels(result: dict[str, Any]) -> list[str]:
    """Task names for axes (CLINC150 domains, environments, class lists), shortened; prefixed with
    the index when names repeat (domain-incremental control has one environment many times)."""
    names = [str(t.get("name") or "") for t in result.get("tasks", [])]
    n = len(result["accuracy_matrix"])
    if len(names) != n or not all(names):
        return [f"task {j}" for j in range(n)]
    short = [s if len(s) <= MAX_LABEL else s[: MAX_LABEL - 1] + "…" for s in names]
    return short if len(set(short)) == n else [f"{j}: {s}" for j, s in enumerate(short)]


def _matrix(result: dict[str, Any], key: str = "accuracy_matrix") -> np.ndarray:
    return np.asarray(result[key], dtype=np.float64)


def _title(result: dict[str, Any], what: str) -> str:
    seeds = result.get("seeds")
    over = f", mean of {len(seeds)} seeds" if seeds and len(seeds) > 1 else ""
    return f"{what}: {result['strategy']} on {result['benchmark']} ({result['scenario']}-IL{over})"


def _retention(r: np.ndarray) -> np.ndarray:
    """Per earlier task, final / just-learned accuracy (0 where nothing was learned, as the metric)."""
    diag = np.diag(r)[:-1]
    return np.divide(r[-1, :-1], diag, out=np.zeros_like(diag), where=diag > 0)


def matrix_heatmap(result: dict[str, Any], key: str = "accuracy_matrix", scale: float = 100.0,
                   unit: str | None = None, what: str = "Accuracy matrix") -> Figure:
    """R[i][j] (row: after training task i; column: evaluated on task j) with the values in the
    cells; the diagonal (learning accuracy) is outlined. `key="return_matrix", scale=1` draws raw returns."""
    r = _matrix(result, key) * scale
    t = len(r)
    labels = task_labels(result)
    longest = max(len(s) for s in labels)
    cell = max(0.36, min(0.85, 7.0 / t))
    label_space = 0.3 + longest * 0.067
    fig = new_figure(t * cell + label_space + 1.9, t * cell + label_space + 1.1)
    ax = fig.add_subplot()
    lo, hi = (min(0.0, float(r.min())), max(100.0, float(r.max()))) if scale == 100 else (r.min(), r.max())
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    image = ax.imshow(r, cmap=MAGNITUDE, norm=norm, aspect="equal")
    fig.colorbar(image, ax=ax, label=unit or value_label(result), shrink=0.9)
    size = min(10.0, max(5.5, cell * 72 * 0.27))
    digits = 1 if t <= 6 and scale == 100 else 0
    cmap = colormaps[MAGNITUDE]
    for i in range(t):
        for j in range(t):
            ax.text(j, i, f"{r[i, j]:.{digits}f}", ha="center", va="center", fontsize=size,
                    color=text_colour(cmap(norm(r[i, j]))))
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#D55E00", linewidth=1.6))
    ax.set_xticks(range(t), labels, rotation=90 if longest > 3 else 0, fontsize=8)
    ax.set_yticks(range(t), labels, fontsize=8)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training on task")
    ax.set_title(_title(result, what), fontsize=10)
    return fig


def _order_colours(t: int) -> list[Any]:
    """One colour per task in learning order (viridis without its last, pale-yellow tenth)."""
    return [_ORDER_CMAP(j / max(1, t - 1)) for j in range(t)]


def _order_colourbar(fig: Figure, axes: Any, t: int, label: str, shrink: float = 0.9) -> None:
    """A colour bar for task order, where a legend of more than `MAX_LEGEND` entries would be too long."""
    bar = fig.colorbar(ScalarMappable(Normalize(-0.5, t - 0.5), _ORDER_CMAP), ax=axes, label=label, shrink=shrink)
    bar.set_ticks(list(range(0, t, max(1, t // 10))))


def task_curves(result: dict[str, Any], key: str = "accuracy_matrix", scale: float = 100.0,
                unit: str | None = None, what: str = "Each task across the stream") -> Figure:
    """One line per task j: its accuracy after training each task i >= j (from when it was learned)."""
    r = _matrix(result, key) * scale
    t = len(r)
    labels = task_labels(result)
    fig = new_figure(9.0 if t > MAX_LEGEND else 8.0, 4.6)
    ax = fig.add_subplot()
    colours = _order_colours(t)
    if t > MAX_LEGEND:
        _order_colourbar(fig, ax, t, "task (learning order)")
    for j in range(t):
        ax.plot(range(j, t), r[j:, j], color=colours[j], marker=MARKERS[j % len(MARKERS)], markersize=4,
                linewidth=1.5, label=f"{j}: {labels[j]}" if not labels[j].startswith(f"{j}:") else labels[j])
    ax.set_xticks(range(t))
    ax.set_xlim(-0.3, t - 0.7)
    if scale == 100:
        ax.set_ylim(min(0.0, float(r.min())) - 2, max(100.0, float(r.max())) + 2)
    ax.set_xlabel("after training on task (index)")
    ax.set_ylabel(unit or value_label(result))
    ax.grid(alpha=0.3)
    if t <= MAX_LEGEND:
        ax.legend(title="task", fontsize=8, title_fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(_title(result, what), fontsize=10)
    return fig


def learning_and_retention(result: dict[str, Any]) -> Figure:
    """Per task, left: accuracy right after learning it (the diagonal) against before any training;
    right: the share of it kept at the end. A model that learned nothing keeps everything of nothing:
    side by side, it cannot look good."""
    r = _matrix(result)
    t = len(r)
    fig = new_figure(max(8.0, 0.45 * t + 3.0), 4.2)
    left, right = fig.subplots(1, 2, sharex=True)
    idx = np.arange(t)
    left.bar(idx, 100 * np.diag(r), color=PALETTE[0], label="just after learning it")
    if result.get("baseline_accuracy") is not None and len(result["baseline_accuracy"]) == t:
        left.plot(idx, 100 * np.asarray(result["baseline_accuracy"], dtype=float), linestyle="none",
                  marker="_", markersize=14, markeredgewidth=2.5, color=PALETTE[5], label="before training")
    left.set_title("learning accuracy (plasticity)", fontsize=10)
    left.set_ylabel(value_label(result))
    left.legend(fontsize=8, loc="lower right")
    retention = 100 * _retention(r)
    right.bar(idx[:-1], retention, color=PALETTE[2], hatch="//", edgecolor="white")
    right.axhline(100, color="black", linewidth=0.8, linestyle="--")
    right.set_title("retention at the end (% of learned kept)", fontsize=10)
    right.set_ylabel("final / just-learned (%)")
    for ax in (left, right):
        ax.set_xlabel("task (index)")
        ax.set_xticks(idx)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_title(result, "Learning beside retention"), fontsize=10)
    return fig


def _by_strategy(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["strategy"], []).append(r)
    return groups


def _run_metrics(run: dict[str, Any]) -> dict[str, float]:
    r = _matrix(run)
    return {"learning accuracy": 100 * float(np.diag(r).mean()), "final accuracy": 100 * float(r[-1].mean()),
            "retention": 100 * float(_retention(r).mean()) if len(r) > 1 else float("nan")}


def strategy_bars(results: Sequence[dict[str, Any]]) -> Figure:
    """Per strategy: learning accuracy, final accuracy and retention, mean over seeds with the
    standard deviation as error bars and each seed as a dot."""
    groups = _by_strategy(results)
    names = list(groups)
    metrics = ("learning accuracy", "final accuracy", "retention")
    fig = new_figure(max(7.0, 1.0 * len(names) + 3.0), 4.8)
    ax = fig.add_subplot()
    width = 0.8 / len(metrics)
    for m, metric in enumerate(metrics):
        # retention is NaN for one task: no bar, rather than a warning and a zero
        per_run = [[_run_metrics(run)[metric] for run in groups[name]] for name in names]
        values = [[v for v in vs if not math.isnan(v)] for vs in per_run]
        means = [float(np.mean(v)) if v else float("nan") for v in values]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        x = np.arange(len(names)) + (m - 1) * width
        ax.bar(x, means, width, yerr=stds, capsize=3, color=PALETTE[m], hatch=HATCHES[m], edgecolor="white",
               label=metric, error_kw={"elinewidth": 1.2})
        for xi, points in zip(x, values, strict=True):
            ax.plot([xi] * len(points), points, linestyle="none", marker="o", markersize=3, color="black", alpha=0.7)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 5 else 0,
                  ha="right" if len(names) > 5 else "center", rotation_mode="anchor")
    ax.set_ylabel(value_label(results[0]) + " / retention (%)")
    ax.set_xlabel("strategy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    seeds = sorted({len(v) for v in groups.values()})
    first = results[0]
    ax.set_title(f"Strategies on {first['benchmark']} ({first['scenario']}-IL, {len(first['accuracy_matrix'])} "
                 f"tasks): mean ± std over {'/'.join(map(str, seeds))} seed(s)", fontsize=10)
    return fig


def plasticity_stability(results: Sequence[dict[str, Any]]) -> Figure:
    """Learning accuracy (x) against retention (y), one point per run, a cross per strategy mean:
    the upper right is good; a high retention far left means nothing was learned to forget."""
    groups = _by_strategy(results)
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    for s, (name, runs) in enumerate(groups.items()):
        points = np.array([[_run_metrics(run)["learning accuracy"], _run_metrics(run)["retention"]] for run in runs])
        colour, marker = PALETTE[s % len(PALETTE)], MARKERS[s % len(MARKERS)]
        ax.plot(points[:, 0], points[:, 1], linestyle="none", marker=marker, color=colour, alpha=0.5, markersize=6)
        mean, std = points.mean(0), points.std(0, ddof=1) if len(points) > 1 else np.zeros(2)
        ax.errorbar(mean[0], mean[1], xerr=std[0], yerr=std[1], marker=marker, markersize=9, color=colour,
                    markeredgecolor="black", capsize=3, label=name)
    ax.axhline(100, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("learning accuracy (%, mean of the diagonal)")
    ax.set_ylabel("retention (%, final / just-learned)")
    ax.grid(alpha=0.3)
    ax.legend(title="strategy", fontsize=8, title_fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Plasticity against stability (one small marker per seed)", fontsize=10)
    return fig


def has_importance(result: dict[str, Any]) -> bool:
    return any(task.get("importance_histograms") for task in result.get("per_task", []))


def importance_histograms(result: dict[str, Any]) -> Figure:
    """Per parameter tensor (the largest `MAX_HISTOGRAMS`), the histogram of log10(importance) of the
    accumulated estimate (EWC's Fisher, SI's or MAS's Omega) after each task; exact zeros counted apart."""
    per_task = [task.get("importance_histograms") or {} for task in result["per_task"]]
    sizes: dict[str, int] = {}
    for hist in per_task:
        for name, h in hist.items():
            sizes[name] = int(h["size"])
    largest = set(sorted(sizes, key=lambda n: -sizes[n])[:MAX_HISTOGRAMS])
    names = [n for n in sizes if n in largest]  # in the model's order, input layer first
    if not names:
        raise ValueError("this result holds no importance histograms (not a consolidation strategy)")
    t, cols = len(per_task), min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(4.0 * cols + (1.2 if t > MAX_LEGEND else 1.8), 2.9 * rows + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    colours = _order_colours(t)
    parts = {n.split(":", 1)[0] for n in names}
    for ax, name in zip(axes, names, strict=False):
        zeros = 0.0
        for i, hist in enumerate(per_task):
            if name not in hist:
                continue
            h = hist[name]
            share = 100 * np.asarray(h["counts"], dtype=float) / max(1, h["size"])
            ax.stairs(share, h["edges"], color=colours[i], linewidth=1.3 if t <= MAX_LEGEND else 0.8,
                      label=f"after task {i}")
            zeros = 100 * h["zeros"] / max(1, h["size"])
        label = name if len(parts) > 1 else name.split(":", 1)[1]
        ax.set_title(f"{label}\n{sizes[name]:,} values, {zeros:.0f}% exactly 0 at the end", fontsize=8)
        ax.set_xlabel("log10 importance")
        ax.set_ylabel("share of values (%)")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if t > MAX_LEGEND:
        _order_colourbar(fig, list(axes), t, "after task (index)", shrink=0.6)
    else:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="outside right center")
    shown = "" if len(sizes) <= MAX_HISTOGRAMS else f", the {MAX_HISTOGRAMS} largest of {len(sizes)} tensors"
    fig.suptitle(_title(result, f"Importance per layer{shown}"), fontsize=10)
    return fig


def control_returns(result: dict[str, Any]) -> Figure:
    """Control runs: the raw return of each task's environment after training each task, from when it
    was learned (solid) and before (dotted), between the random (dashed) and expert (dash-dot) returns."""
    r = _matrix(result, "return_matrix")
    t = len(r)
    labels = task_labels(result)
    cols = min(3, t)
    rows = math.ceil(t / cols)
    fig = new_figure(3.6 * cols + 0.4, 2.8 * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for j, ax in enumerate(axes[:t]):
        ax.plot(range(j + 1), r[: j + 1, j], color=PALETTE[0], linestyle=":", marker=".", linewidth=1)
        ax.plot(range(j, t), r[j:, j], color=PALETTE[0], marker="o", markersize=4, linewidth=1.8, label="agent")
        ax.axhline(result["random_return"][j], color=PALETTE[5], linestyle="--", linewidth=1, label="random")
        ax.axhline(result["expert_return"][j], color=PALETTE[2], linestyle="-.", linewidth=1, label="expert")
        ax.set_title(labels[j], fontsize=9)
        ax.set_xticks(range(t))
        ax.set_xlabel("after training on task", fontsize=8)
        ax.set_ylabel("return (reward per episode)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[t:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(result, "Returns per task across the stream"), fontsize=10)
    return fig
