"""Results -> one self-contained HTML page with its PNG figures beside it (`lifelong report`).

The page fetches nothing from a network: its style is inline, it has no script, and every image is
a PNG file in the same folder (or, for pages served from memory such as the service page, a data
URI). The small HTML helpers here (`page`, `table`, `figure`) are shared with `service_page`.

>>> import json, pathlib, tempfile
>>> from lifelong.data.streams import StreamConfig
>>> from lifelong.learner import LearnerConfig
>>> from lifelong.run import ModelConfig, RunConfig, run
>>> result = run(RunConfig(StreamConfig("split-digits", tasks=2), "ewc", model=ModelConfig(hidden=(16,)))).record
>>> index = write_report([result], tempfile.mkdtemp())
>>> sorted(p.name for p in index.parent.glob("*.png"))[:2]
['split-digits-task-2-ewc-curves.png', 'split-digits-task-2-ewc-importance.png']
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lifelong import atomic
from lifelong.reporting import plots
from lifelong.reporting.control_plots import return_curves
from lifelong.reporting.text import aggregate

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1b1b1b;
       max-width: 1180px; margin: 0 auto; padding: 1.2em 1.5em 3em; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { border-bottom: 2px solid #0072B2; padding-bottom: 0.15em; margin-top: 2em; }
h3 { margin-top: 1.6em; } .meta { color: #555; } code { font-size: 0.92em; background: #f3f3f3; padding: 0 0.2em; }
nav ul { columns: 2; padding-left: 1.2em; } nav a, a { color: #0a5a91; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef3f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { overflow-wrap: anywhere; min-width: 10em; } td code { word-break: break-all; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; height: auto; border: 1px solid #e2e2e2; }
figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
.badge { display: inline-block; padding: 0.05em 0.55em; border-radius: 0.8em; font-weight: 600; color: #fff; }
.good { background: #00695C; } .bad { background: #B3261E; } .neutral { background: #555; }
tr.current td { background: #e8f4ec; font-weight: 600; }
details { margin: 0.4em 0 1em; } summary { cursor: pointer; font-weight: 600; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str) -> str:
    """A complete HTML document: inline style, no script, nothing fetched from elsewhere."""
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n<title>{esc(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def pct(value: Any, digits: int = 1) -> str:
    """A share as a percentage ('97.3'); '–' for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None,
          row_class: Callable[[int], str] | None = None, wrap: Sequence[bool] | None = None) -> str:
    """An HTML table; cells are escaped unless they are `Markup` (already HTML). `numeric` columns are
    right-aligned; `wrap` columns may break long words (user input) instead of widening the page."""
    kinds = [" class=num" if n else " class=wrap" if w else ""
             for n, w in zip(numeric or [False] * len(header), wrap or [False] * len(header), strict=True)]
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = row_class(i) if row_class else ""
        cells = "".join(f"<td{kinds[k]}>{c if isinstance(c, Markup) else esc(c)}</td>" for k, c in enumerate(row))
        out.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


class Markup(str):
    """A string that is already HTML (not escaped again by `table`)."""


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys, for the hyperparameter table."""
    out: list[tuple[str, Any]] = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.extend(flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", json.dumps(value) if isinstance(value, (list, tuple, dict)) else value))
    return out


def figure(src: str, width: int, height: int, alt: str, caption: str) -> str:
    """An <img> with its pixel size (so the page does not jump while loading) and a caption."""
    return (f'<figure><img src="{esc(src)}" width="{width}" height="{height}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def pixel_size(fig: Figure) -> tuple[int, int]:
    w, h = fig.get_size_inches() * plots.DPI
    return round(w), round(h)


def data_uri(fig: Figure) -> str:
    """The figure as a PNG data URI, for pages that are served from memory."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Run results from files written by `lifelong run --out` (one run), `lifelong compare --out`
    or a benchmark script (a "runs" list), or a JSON list of runs."""
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        runs = data if isinstance(data, list) else [data] if "accuracy_matrix" in data else data.get("runs")
        if not runs or not all(isinstance(r, dict) and "accuracy_matrix" in r for r in runs):
            raise ValueError(f"{path} holds no run results (no 'accuracy_matrix', no 'runs' list)")
        results.extend(runs)
    return results


def _slug(*parts: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(map(str, parts)).lower()).strip("-")


def _setting(value: Any) -> Any:
    """A run's configuration without its seeds: runs that differ only here are seeds of one setting."""
    if isinstance(value, dict):
        return {k: _setting(v) for k, v in value.items() if k != "seed"}
    return value


def _groups(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, list[dict[str, Any]]]]:
    """(benchmark, scenario, tasks) -> strategy -> runs, in first-seen order. Runs of one strategy with
    different settings (not only seeds) are kept apart as "ewc", "ewc (2)", ..., never averaged."""
    out: dict[tuple[str, str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        by_strategy = out.setdefault((r["benchmark"], r["scenario"], len(r["accuracy_matrix"])), {})
        setting = json.dumps(_setting(r.get("config", {})), sort_keys=True, default=str)
        label, n = r["strategy"], 1
        while label in by_strategy and json.dumps(_setting(by_strategy[label][0].get("config", {})),
                                                  sort_keys=True, default=str) != setting:
            n += 1
            label = f"{r['strategy']} ({n})"
        by_strategy.setdefault(label, []).append(r if label == r["strategy"] else {**r, "strategy": label})
    return out


def mean_result(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first run with its matrices replaced by their mean over the runs (seeds), and `seeds` set."""
    first = dict(runs[0])
    if len(runs) > 1:
        for key in ("accuracy_matrix", "return_matrix", "baseline_accuracy"):
            if all(r.get(key) is not None for r in runs):
                first[key] = np.mean([np.asarray(r[key], dtype=float) for r in runs], axis=0).tolist()
    first["seeds"] = [r["config"]["seed"] for r in runs]
    return first


class _Figures:
    """Writes each figure as a PNG into the report folder and returns its <figure> HTML."""

    def __init__(self, folder: Path):
        self.folder, self.names = folder, set[str]()

    def add(self, fig: Figure, name: str, alt: str, caption: str) -> str:
        name = _slug(name)
        while name in self.names:
            name += "-2"
        self.names.add(name)
        plots.save(fig, self.folder / f"{name}.png")
        width, height = pixel_size(fig)
        return figure(f"{name}.png", width, height, alt, caption)


METRIC_COLUMNS = (("learning_accuracy", "learning acc. (%)"), ("average_accuracy", "final acc. (%)"),
                  ("average_retention", "retention (%)"), ("forgetting", "forgetting (pp)"),
                  ("bwt", "BWT (pp)"), ("fwt", "FWT (pp)"))


def _summary_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for row in rows:
        cells = [row["strategy"], len(row["seeds"])]
        for key, _ in METRIC_COLUMNS:
            if key not in row:  # a metric some run lacks (FWT in class-IL)
                cells.append(pct(None))
                continue
            m, s = row[key]["mean"], row[key]["std"]
            cells.append(pct(m) + (f" ± {pct(s)}" if len(row["seeds"]) > 1 else ""))
        cells.append(f"{row['seconds']['mean']:.1f}")
        body.append(cells)
    return table(["strategy", "seeds", *(h for _, h in METRIC_COLUMNS), "seconds"], body,
                 [False, True, *([True] * len(METRIC_COLUMNS)), True])


def _runs_table(runs: Sequence[dict[str, Any]]) -> str:
    body = [[r["config"]["seed"], *(pct(r.get(k)) for k, _ in METRIC_COLUMNS), pct(r.get("specialist_retention")),
             f"{r['seconds']:.1f}", f"{r.get('state_bytes', 0) / 1e6:.2f}"] for r in runs]
    return table(["seed", *(h for _, h in METRIC_COLUMNS), "vs specialist (%)", "seconds", "state (MB)"], body,
                 [True] * (len(METRIC_COLUMNS) + 4))


def _tasks_table(run: dict[str, Any]) -> str:
    body = []
    for info, stats in zip(run.get("tasks", []), run.get("per_task", []), strict=False):
        bias = stats.get("recency_bias")
        body.append([info["id"], info.get("name", ""), len(info.get("classes", [])), info.get("train_size"),
                     f"{stats.get('loss', float('nan')):.4f}", f"{stats.get('penalty', float('nan')):.4g}",
                     f"{stats.get('train_seconds', 0):.2f}", f"{stats.get('after_task_seconds', 0):.2f}",
                     "–" if bias is None else pct(bias)])
    return table(["task", "name", "classes", "train size", "mean loss", "penalty at end", "train s",
                  "after-task s", "recency bias (%)"], body, [True, False, *([True] * 7)])


def _environment_table(run: dict[str, Any]) -> str:
    env = run.get("environment", {})
    rows: list[list[Any]] = [[k, v] for k, v in env.items() if k != "command"]
    rows.append(["command", Markup(f"<code>{esc(env.get('command', '–'))}</code>")])
    return table(["", ""], rows)


def _strategy_section(name: str, runs: list[dict[str, Any]], figures: _Figures, prefix: str) -> str:
    mean = mean_result(runs)
    seeds = ", ".join(str(s) for s in mean["seeds"])
    over = f" (mean over seeds {seeds})" if len(runs) > 1 else ""
    out = [f'<section id="{_slug(prefix, name)}"><h3>{esc(name)}</h3>', _runs_table(runs)]
    control = plots.is_control(mean)
    what = "normalised return" if control else "accuracy"
    out.append(figures.add(plots.matrix_heatmap(mean), f"{prefix}-{name}-matrix", f"accuracy matrix of {name}",
                           f"Row i, column j: {what} on task j after training through task i{over}. Outlined: "
                           "the diagonal, each task just after it was learned; above it, tasks not trained yet."))
    if control:
        out.append(figures.add(plots.matrix_heatmap(mean, "return_matrix", 1.0, "return (reward per episode)",
                                                    "Return matrix"), f"{prefix}-{name}-returns-matrix",
                               f"return matrix of {name}", f"The raw returns behind the normalised scores{over}."))
        out.append(figures.add(plots.control_returns(mean), f"{prefix}-{name}-returns", f"returns of {name}",
                               "Each environment's return after each task, between the random and expert returns."))
        if all(r.get("curve") for r in runs):
            out.append(figures.add(return_curves(runs, "returns over the lifetime"), f"{prefix}-{name}-lifetime",
                                   f"returns over the agent's lifetime, {name}",
                                   "Every task's normalised return as the agent trains, every few thousand "
                                   "environment steps (mean over seeds, band from the lowest to the highest); "
                                   "dotted lines where the next task starts."))
    out.append(figures.add(plots.task_curves(mean), f"{prefix}-{name}-curves", f"each task across the stream, {name}",
                           f"One line per task, from the step it was learned: falling lines are forgetting{over}."))
    if len(mean["accuracy_matrix"]) > 1:
        out.append(figures.add(plots.learning_and_retention(mean), f"{prefix}-{name}-learning",
                               f"learning accuracy beside retention, {name}",
                               "Left: each task just after learning it, against the untrained model. Right: the "
                               "share of it kept at the end. High retention counts only where something was learned."))
    if plots.has_importance(runs[0]):
        out.append(figures.add(plots.importance_histograms(runs[0]), f"{prefix}-{name}-importance",
                               f"importance histograms, {name}",
                               f"Seed {runs[0]['config']['seed']}: the accumulated importance of each parameter "
                               "tensor after each task, on a log scale; exact zeros are counted in the titles."))
    out.append(f"<details><summary>Per task (seed {runs[0]['config']['seed']})</summary>{_tasks_table(runs[0])}"
               "</details>")
    config = [(k, v) for k, v in flatten(runs[0].get("config", {})) if not k.endswith("seed")]
    out.append("<details><summary>Hyperparameters</summary>"
               + table(["setting", "value"], config) + f"<p>Seeds: {esc(seeds)}.</p></details>")
    out.append(f"<details><summary>Versions, machine and command (seed {runs[0]['config']['seed']})</summary>"
               f"{_environment_table(runs[0])}</details></section>")
    return "\n".join(out)


def render_report(results: Sequence[dict[str, Any]], folder: str | os.PathLike, title: str | None = None) -> str:
    """The report page's HTML; writes its figures into `folder` on the way."""
    if not results:
        raise ValueError("a report needs at least one run result")
    folder = Path(folder)
    figures = _Figures(folder)
    # continual-RL results written before they carried a scenario: every one of them is task-incremental
    results = [r if "scenario" in r or "return_matrix" not in r else {**r, "scenario": "task"} for r in results]
    groups = _groups(results)
    title = title or "lifelong report: " + ", ".join(sorted({r["strategy"] for r in results}))
    nav, sections = [], []
    for (benchmark, scenario, t), by_strategy in groups.items():
        prefix = f"{benchmark}-{scenario}-{t}"
        heading = f"{benchmark}, {scenario}-incremental, {t} tasks"
        nav.append(f'<li><a href="#{_slug(prefix)}">{esc(heading)}</a>: '
                   + ", ".join(f'<a href="#{_slug(prefix, s)}">{esc(s)}</a>' for s in by_strategy) + "</li>")
        runs = [r for rs in by_strategy.values() for r in rs]
        part = [f'<section id="{_slug(prefix)}"><h2>{esc(heading)}</h2>',
                f"<p>{len(runs)} run(s), evaluated on the {esc(runs[0].get('eval_split', 'test'))} split. Accuracies "
                "in percent; forgetting, BWT and FWT in percentage points.</p>",
                _summary_table(aggregate(runs))]
        if len(runs) > 1:
            part.append(figures.add(plots.strategy_bars(runs), f"{prefix}-strategies", "strategies side by side",
                                    "Mean over seeds (bars), the standard deviation (error bars) and each seed "
                                    "(dots). Learning accuracy stands beside retention: a model that learned little "
                                    "has little to forget."))
            part.append(figures.add(plots.plasticity_stability(runs), f"{prefix}-plasticity",
                                    "learning accuracy against retention",
                                    "Each run (small markers) and each strategy's mean with its spread (crosses)."))
        part.extend(_strategy_section(name, rs, figures, prefix) for name, rs in by_strategy.items())
        sections.append("\n".join(part) + "</section>")
    import lifelong

    header = (f"<header><h1>{esc(title)}</h1><p class=meta>{len(results)} run(s); made "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')} by lifelong {esc(lifelong.__version__)}.</p>"
              f"<nav><ul>{''.join(nav)}</ul></nav></header>")
    return page(title, header + "\n" + "\n".join(sections))


def write_report(results: Sequence[dict[str, Any]], folder: str | os.PathLike, title: str | None = None) -> Path:
    """Write `folder/index.html` and its PNG figures for the given run results; returns the index path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = render_report(results, folder, title)
    return atomic.write_text(folder / "index.html", text)  # a reader never sees half a page
