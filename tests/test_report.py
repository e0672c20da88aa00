"""Reports: figures from a real small result, the HTML page, 20-task layouts, training logs."""

import csv
import json
from itertools import combinations

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.text import Text
from page_util import check_local
from PIL import Image

from lifelong.cli import main
from lifelong.logs import check_kinds, open_log
from lifelong.reporting import plots
from lifelong.reporting.importance import HISTOGRAM_EDGES
from lifelong.reporting.report import load_results, render_report, write_report
from lifelong.reporting.service_page import gate_heatmap

SMALL = ["--benchmark", "split-digits", "--epochs", "1", "--hidden", "32", "--quiet"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A real `compare` of naive and EWC over two seeds, with --report and --log csv, as a user runs it."""
    root = tmp_path_factory.mktemp("compare")
    assert main(["compare", *SMALL, "--strategies", "naive,ewc", "--seeds", "0,1", "--out", str(root / "c.json"),
                 "--report", str(root / "report"), "--log", "csv", "--log-dir", str(root / "logs")]) == 0
    return root


@pytest.fixture(scope="module")
def runs(compared):
    return load_results([compared / "c.json"])


@pytest.fixture(scope="module")
def ewc(runs):
    return next(r for r in runs if r["strategy"] == "ewc")


# ---- figures from a known small result -------------------------------------------------------------

FIGURES = {
    "matrix": lambda r, rs: plots.matrix_heatmap(r),
    "curves": lambda r, rs: plots.task_curves(r),
    "learning": lambda r, rs: plots.learning_and_retention(r),
    "importance": lambda r, rs: plots.importance_histograms(r),
    "strategies": lambda r, rs: plots.strategy_bars(rs),
    "plasticity": lambda r, rs: plots.plasticity_stability(rs),
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_written_with_the_set_size_and_labelled(name, ewc, runs, tmp_path):
    fig = FIGURES[name](ewc, runs)
    path = plots.save(fig, tmp_path / f"{name}.png")
    width, height = fig.get_size_inches() * plots.DPI
    assert 10_000 < path.stat().st_size < 2_000_000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (round(width), round(height))
    assert 500 <= width <= 2000 and 300 <= height <= 2000
    titled = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titled or fig.get_suptitle()
    for ax in fig.axes:
        if ax.get_visible() and ax.get_title():  # plot axes (not colour bars) say what their axes measure
            assert ax.get_xlabel() and ax.get_ylabel()


def test_the_heatmap_writes_every_value_in_its_cell(ewc):
    fig = plots.matrix_heatmap(ewc)
    r = 100 * np.array(ewc["accuracy_matrix"])
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(cells) == r.size
    for (i, j), text in cells.items():
        assert float(text) == pytest.approx(r[i, j], abs=0.051)
    assert ax.images[0].get_cmap().name == plots.MAGNITUDE


def test_each_task_is_a_line_from_the_step_it_was_learned(ewc):
    ax = plots.task_curves(ewc).axes[0]
    r = 100 * np.array(ewc["accuracy_matrix"])
    assert len(ax.lines) == len(r)
    for j, line in enumerate(ax.lines):
        assert list(line.get_xdata()) == list(range(j, len(r)))
        np.testing.assert_allclose(line.get_ydata(), r[j:, j])


def test_learning_accuracy_stands_beside_retention(ewc):
    left, right = plots.learning_and_retention(ewc).axes
    r = np.array(ewc["accuracy_matrix"])
    np.testing.assert_allclose([p.get_height() for p in left.patches], 100 * np.diag(r))
    retention = [p.get_height() for p in right.patches]
    np.testing.assert_allclose(retention, 100 * r[-1, :-1] / np.diag(r)[:-1])
    assert np.mean(retention) == pytest.approx(100 * ewc["average_retention"])


def test_strategy_bars_show_the_mean_and_the_spread_over_seeds(runs):
    ax = plots.strategy_bars(runs).axes[0]
    final = {s: [r["average_accuracy"] * 100 for r in runs if r["strategy"] == s] for s in ("naive", "ewc")}
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][1]  # learning acc., final acc., retention
    assert [b.get_height() for b in bars] == pytest.approx([np.mean(final["naive"]), np.mean(final["ewc"])])
    segments = bars.errorbar.lines[2][0].get_segments()
    spreads = [abs(seg[1][1] - seg[0][1]) / 2 for seg in segments]
    assert spreads == pytest.approx([np.std(final["naive"], ddof=1), np.std(final["ewc"], ddof=1)])


def test_importance_histograms_show_every_layer_after_every_task(ewc):
    fig = plots.importance_histograms(ewc)
    tensors = ewc["per_task"][-1]["importance_histograms"]
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.patches]
    assert len(shown) == len(tensors) == 4  # 2 Linear layers (hidden 32): weights and biases
    first = shown[0]
    assert len(first.patches) == len(ewc["per_task"])  # one outline per task
    name, last = next(iter(tensors.items()))
    assert name.split(":")[1] in first.get_title()
    np.testing.assert_allclose(first.patches[-1].get_data().values, 100 * np.array(last["counts"]) / last["size"])
    with pytest.raises(ValueError, match="no importance"):
        plots.importance_histograms({**ewc, "per_task": [{}]})


def _as_control(result):
    """The same matrix read as a control run's normalised scores, with the raw returns beside it."""
    t = len(result["accuracy_matrix"])
    random, expert = [-100.0 * (j + 1) for j in range(t)], [200.0 + 50 * j for j in range(t)]
    returns = [[random[j] + v * (expert[j] - random[j]) for j, v in enumerate(row)]
               for row in result["accuracy_matrix"]]
    names = [("CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0", "Pendulum-v1")[j % 5] for j in range(t)]
    return {**result, "return_matrix": returns, "random_return": random, "expert_return": expert,
            "tasks": [{**task, "name": name} for task, name in zip(result["tasks"], names, strict=True)]}


def test_control_runs_show_returns_per_task_between_random_and_expert(ewc):
    control = _as_control(ewc)
    fig = plots.control_returns(control)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [t["name"] for t in control["tasks"]]
    for j, ax in enumerate(axes):
        learned = ax.lines[1]
        np.testing.assert_allclose(learned.get_ydata(), np.array(control["return_matrix"])[j:, j])
        assert {ln.get_ydata()[0] for ln in ax.lines[2:]} == {control["random_return"][j], control["expert_return"][j]}
    assert "normalised return" in plots.matrix_heatmap(control).axes[1].get_ylabel()


def test_language_runs_label_the_matrix_with_domain_names(ewc):
    domains = ["banking", "credit_cards", "kitchen_and_dining", "home", "auto_and_commute"]
    tasks = [{**t, "name": d} for t, d in zip(ewc["tasks"], domains, strict=True)]
    language = {**ewc, "benchmark": "clinc150", "tasks": tasks}
    ax = plots.matrix_heatmap(language).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == domains
    assert [t.get_text() for t in ax.get_yticklabels()] == domains


# ---- no overlapping text at 10 and 20 tasks ---------------------------------------------------------

NAMES = ["banking", "credit_cards", "kitchen_and_dining", "home", "auto_and_commute", "travel", "utility", "work",
         "small_talk", "meta"]


def synthetic(t, strategy="ewc", seed=0, tensors=4):
    """A t-task result shaped like `run`'s (for layout checks only): slow forgetting, CLINC-like names."""
    rng = np.random.default_rng(seed)
    r = np.array([[0.95 * 0.98 ** (i - j) if j <= i else 0.1 for j in range(t)] for i in range(t)])
    r = np.clip(r + rng.normal(0, 0.01, r.shape), 0, 1)
    edges = HISTOGRAM_EDGES
    per_task = [{"loss": 0.3, "penalty": 0.01 * i, "train_seconds": 1.0, "after_task_seconds": 0.1,
                 "recency_bias": None,
                 "importance_histograms": {f"{strategy}:encoder.layers.{k}.attention.weight":
                                           {"edges": edges, "counts": rng.integers(0, 500, 32).tolist(), "zeros": 10,
                                            "size": 16000} for k in range(tensors)}} for i in range(t)]
    return {"strategy": strategy, "benchmark": "clinc150", "scenario": "task", "eval_split": "test",
            "accuracy_matrix": r.tolist(), "baseline_accuracy": [0.1] * t, "per_task": per_task,
            "tasks": [{"id": j, "name": f"{NAMES[j % 10]}{'' if j < 10 else '_and_more_2'}", "classes": [0, 1],
                       "train_size": 100} for j in range(t)],
            "config": {"seed": seed}, "average_accuracy": float(r[-1].mean()), "seconds": 1.0}


def drawn_texts(fig):
    """Every text matplotlib draws: tick labels within the view, axis labels, titles, cell values,
    legends, colour bars, the figure's title."""
    fig.canvas.draw()
    texts: list[Text] = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis, index in ((ax.xaxis, 0), (ax.yaxis, 1)):
            lo, hi = sorted(axis.get_view_interval())
            texts += [t for t in axis.get_ticklabels() if lo - 1e-9 <= t.get_position()[index] <= hi + 1e-9]
            texts.append(axis.label)
        texts += [ax.title, *ax.texts]
        if ax.get_legend():
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    for legend in fig.legends:
        texts += legend.get_texts()
    texts += [*fig.texts, fig._suptitle] if fig._suptitle else fig.texts
    unique = {id(t): t for t in texts}  # the suptitle may also be in fig.texts
    return [t for t in unique.values() if t.get_visible() and t.get_text().strip()]


def overlaps(fig):
    renderer = fig.canvas.get_renderer()
    texts = drawn_texts(fig)
    boxes = [t.get_window_extent(renderer) for t in texts]
    width, height = fig.canvas.get_width_height()
    outside = [t.get_text() for t, b in zip(texts, boxes, strict=True)
               if b.x0 < -1 or b.y0 < -1 or b.x1 > width + 1 or b.y1 > height + 1]
    clashes = [(texts[a].get_text(), texts[b].get_text()) for a, b in combinations(range(len(texts)), 2)
               if boxes[a].overlaps(boxes[b])]
    return len(texts), outside, clashes


@pytest.mark.parametrize("tasks", [10, 20])
def test_no_text_overlaps_at_10_and_20_tasks(tasks):
    result = synthetic(tasks)
    several = [synthetic(tasks, s, seed) for s in ("naive", "ewc", "online-ewc", "si", "mas", "replay", "ewc+replay",
                                                     "der++", "er-ace", "icarl") for seed in range(3)]
    control = _as_control(result)
    figures = {"matrix": plots.matrix_heatmap(result), "curves": plots.task_curves(result),
               "learning": plots.learning_and_retention(result), "importance": plots.importance_histograms(result),
               "strategies": plots.strategy_bars(several), "plasticity": plots.plasticity_stability(several),
               "control": plots.control_returns(control),
               "gate": gate_heatmap({"columns": [t["name"] for t in result["tasks"]] + ["new feedback (held out)"],
                                     "values": [[0.9] * (tasks + 1), [0.88] * (tasks + 1)]})}
    for name, fig in figures.items():
        count, outside, clashes = overlaps(fig)
        assert count > 10, name
        assert not outside, f"{name}: clipped {outside}"
        assert not clashes, f"{name}: overlapping {clashes[:5]}"
    # every task is named on the heatmap's axes (long names shortened), none left out to make room
    ticks = [t.get_text() for t in figures["matrix"].axes[0].get_xticklabels()]
    names = [t["name"] for t in result["tasks"]]
    assert len(set(ticks)) == tasks and ticks == plots.task_labels(result)
    assert all(n == t or (t.endswith("…") and n.startswith(t[:-1])) for n, t in zip(names, ticks, strict=True))


# ---- the HTML page ---------------------------------------------------------------------------------

def test_the_report_page_refers_only_to_local_files(compared):
    folder = compared / "report"
    text = (folder / "index.html").read_text()
    parser = check_local(text, folder)
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert sorted(img["src"] for img in parser.images) == pngs
    assert len(pngs) == 2 + 2 * 3 + 1  # strategies + plasticity, per strategy 3, EWC's importance
    for img in parser.images:
        with Image.open(folder / img["src"]) as image:
            assert image.size == (int(img["width"]), int(img["height"]))
        assert img["alt"]


def test_the_report_has_the_tables_a_reader_needs(compared, runs):
    text = (compared / "report" / "index.html").read_text()
    for needed in ("learning acc. (%)", "retention (%)", "Hyperparameters", "learner.epochs", "model.hidden", "torch",
                   "cpu_count", runs[0]["environment"]["command"].split()[0], runs[0]["environment"]["torch"]):
        assert needed in text, needed
    assert f"{100 * np.mean([r['average_accuracy'] for r in runs if r['strategy'] == 'ewc']):.1f}" in text


def test_runs_differing_in_more_than_the_seed_are_kept_apart(ewc, tmp_path):
    stronger = {**ewc, "config": {**ewc["config"], "strategy_options": {"strength": 1e6, "seed": 0}}}
    html = render_report([ewc, stronger], tmp_path)
    assert ">ewc (2)</h3>" in html and ">ewc</h3>" in html


def test_report_command_reads_run_and_compare_files(compared, tmp_path, capsys):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(load_results([compared / "c.json"])[0]))
    assert main(["report", str(compared / "c.json"), str(single), "--out", str(tmp_path / "r")]) == 0
    assert "report of 5 run(s) written to" in capsys.readouterr().out
    assert (tmp_path / "r" / "index.html").is_file()
    (tmp_path / "bad.json").write_text('{"rows": []}')
    assert main(["report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")]) == 1
    assert "holds no run results" in capsys.readouterr().err


def test_run_writes_a_report_too(tmp_path, capsys):
    assert main(["run", *SMALL, "--strategy", "si", "--tasks", "2", "--json", "--report", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["strategy"] == "si"  # stdout stays one JSON object
    assert "report written to" in out.err
    check_local((tmp_path / "index.html").read_text(), tmp_path)


def test_write_report_needs_a_result(tmp_path):
    with pytest.raises(ValueError):
        write_report([], tmp_path)


# ---- training logs ---------------------------------------------------------------------------------

def test_csv_logs_hold_every_step_and_the_accuracy_after_each_task(compared, runs):
    for run in runs:
        folder = compared / "logs" / f"{run['strategy']}-seed{run['config']['seed']}"
        steps = list(csv.DictReader((folder / "steps.csv").read_text().splitlines()))
        assert len(steps) == sum(t["steps"] for t in run["per_task"])
        assert [int(s["step"]) for s in steps] == list(range(1, len(steps) + 1))
        assert all(float(s["loss"]) > 0 and float(s["step_seconds"]) > 0 for s in steps)
        penalties = [float(s["penalty"]) for s in steps if s["task"] != "0"]
        assert (max(penalties) > 0) == (run["strategy"] == "ewc")  # naive has no penalty
        accuracy = list(csv.DictReader((folder / "accuracy.csv").read_text().splitlines()))
        t = len(run["accuracy_matrix"])
        assert len(accuracy) == t * t
        logged = np.array([float(a["accuracy"]) for a in accuracy]).reshape(t, t)
        np.testing.assert_allclose(logged, run["accuracy_matrix"])


def test_tensorboard_log_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_log(["tensorboard"], tmp_path) as log:
        for step in range(1, 4):
            log({"task": 0, "epoch": 0, "step": step, "loss": 1.0 / step, "penalty": 0.0, "step_seconds": 0.01})
        log({"task": 0, "step": 3, "accuracy": [0.9, 0.5]})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [round(e.value, 3) for e in events.Scalars("train/loss")] == [1.0, 0.5, 0.333]
    assert events.Scalars("accuracy/task_00")[0].value == pytest.approx(0.9)
    assert events.Scalars("accuracy/mean_seen")[0].value == pytest.approx(0.9)


def test_tensorboard_without_its_package_is_a_clear_usage_error(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match="pip install tensorboard"):
        check_kinds(["tensorboard"])
    with pytest.raises(SystemExit) as exit_:
        main(["run", *SMALL, "--log", "tensorboard"])
    assert exit_.value.code == 2 and "needs the tensorboard package" in capsys.readouterr().err


def test_figures_are_sized_for_the_page(ewc):
    """Pixel sizes fit a 1180 px column: a reader sees whole figures without scrolling sideways."""
    for fig in (plots.matrix_heatmap(ewc), plots.task_curves(ewc), plots.learning_and_retention(ewc)):
        assert fig.get_size_inches()[0] * plots.DPI <= 1180


def test_figures_do_not_leak_into_pyplot(ewc):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.matrix_heatmap(ewc)
    assert plt.get_fignums() == before  # no global figure manager: safe in servers and threads
