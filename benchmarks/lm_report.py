"""benchmarks/lm.py's reporting: the Markdown tables of saved runs and the scaling figure (pure functions of
the saved runs; no training)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lifelong.data.facts import HELD_OUT_FORMS
from lifelong.lm.run import LMRunConfig


def _shown(config: dict[str, Any]) -> dict[str, Any]:
    """A run's options as tables show them: the strategy's, the LoRA rank when adapters trained, and the
    learning rate and the optimizer when they are not the default (runs saved before these existed show
    what they showed)."""
    return {**config["options"], **({"lora": config["lora_rank"]} if config.get("lora_rank") else {}),
            **({"lr": config["lr"]} if config.get("lr", LMRunConfig.lr) != LMRunConfig.lr else {}),
            **({"optimizer": config["optimizer"]}
               if config.get("optimizer", LMRunConfig.optimizer) != LMRunConfig.optimizer else {})}


def _mean_std(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def _facts_kept(run: dict[str, Any]) -> float:
    """Of the earlier batches' questions answered right after each batch was learned, the share still
    answered after the last batch: sum over batches 1..T-2 of exact match at the end over the sum of
    exact match right after learning (the issue's ">= 90 % of earlier facts still answered"; unlike the
    mean of per-batch ratios, a batch learned at 0 neither counts as 0 nor divides by 0)."""
    s = run["scores"]
    last = len(s) - 1
    learned = sum(s[j][j]["exact_match"] for j in range(1, last))
    return sum(s[last][j]["exact_match"] for j in range(1, last)) / learned if learned > 0 else float("nan")


def _devices(runs: list[dict[str, Any]]) -> str:
    """Where the runs trained: "cpu", "cuda", or "cpu 2, cuda 1" (runs saved before the field: the CPU).
    On a GPU the CPU seconds are the host's share only."""
    kinds = [r["config"].get("device", "cpu").split(":")[0] for r in runs]
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{k} {n}" for k, n in counts.items())


def _groups(runs: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The runs by (parameters, size, method, shown options): one table row each, its runs the seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        c = r["config"]
        groups.setdefault((r["parameters"], c["model"], r["method"], json.dumps(_shown(c), sort_keys=True)),
                          []).append(r)
    return groups


def table(runs: list[dict[str, Any]], facts: bool = False) -> str:
    """Mean ± std over seeds per (size, method, options)."""
    groups = _groups(runs)
    score = "exact match" if facts else "next-byte acc"
    head = (f"| model | method | options | seeds | final {score} | learning | retention | "
            + ("earlier facts kept | " if facts else "old-domain loss rise | ")
            + "general loss after / before | stored bytes | CPU s | ran on |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (_, model, method, options), rs in sorted(groups.items()):
        m = [r["metrics"] for r in rs]
        cells = [model, method, options.replace("|", "/"), str(len(rs)),
                 _mean_std([x["average_accuracy"] for x in m]), _mean_std([x["learning_accuracy"] for x in m]),
                 _mean_std([x["average_retention"] for x in m])]
        if facts:
            cells.append(_mean_std([_facts_kept(r) for r in rs]))
        else:
            cells.append(_mean_std([x["loss_rise"] for x in m]))
        # CPU seconds of the process (the wall seconds carry the shared machine's load); runs saved
        # before it was recorded have none: the mean is over the runs that have it, their count given
        cpu = [r["cpu_seconds"] for r in rs if "cpu_seconds" in r]
        cells += [_mean_std([x["general_loss_ratio"] for x in m]), f"{int(np.mean([r['stored_bytes'] for r in rs])):,}",
                  (f"{np.mean(cpu):.0f}" + (f" ({len(cpu)} of {len(rs)})" if len(cpu) < len(rs) else "")) if cpu
                  else "-", _devices(rs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def untouched_accuracy(run: dict[str, Any]) -> float | None:
    """The pre-trained model's mean next-token accuracy over the domains before it learns any (row 0 of the
    run's matrix), where recorded (facts runs score exact match, where the untouched model answers next to
    nothing: None)."""
    if not run["metrics"].get("pretrained") or "accuracy" not in run["scores"][0][-1]:
        return None
    return float(np.mean([s["accuracy"] for s in run["scores"][0][1:]]))


def pretrained_table(runs: list[dict[str, Any]]) -> str:
    """Per size: the pre-trained model's mean next-byte accuracy over the domains before it learns any (row 0
    of every run's matrix), the score of not training at all: a final accuracy below it is a net loss."""
    by: dict[tuple[int, str], list[float]] = {}
    for r in runs:
        if (untouched := untouched_accuracy(r)) is not None:
            by.setdefault((r["parameters"], r["config"]["model"]), []).append(untouched)
    lines = ["| model | before the domains (pre-trained, untouched): mean next-byte acc over the domains |",
             "|---|---|"]
    lines += [f"| {model} | {_mean_std(v) if len(set(v)) > 1 else f'{v[0]:.3f}'} |"
              for (_, model), v in sorted(by.items())]
    return "\n".join(lines)


def _learned_to_end(runs: list[dict[str, Any]], keys: tuple[str, ...], header: str) -> str:
    """Facts runs that recorded every one of `keys` (diagnoses beside the score): exact match on each,
    right after learning each batch -> at the end, over the earlier batches 1..T-2 (the batches
    "earlier facts kept" counts); mean ± std over seeds."""
    groups = _groups([r for r in runs if all(k in r["scores"][-1][j] for j in range(1, len(r["scores"]))
                                             for k in keys)])
    lines = [f"| model | method | options | seeds | {header} |", "|---|---|---|---|" + "---|" * len(keys)]
    for (_, model, method, options), rs in sorted(groups.items()):
        cells, s = [], [r["scores"] for r in rs]
        for key in keys:
            learned = [np.mean([x[j][j][key] for j in range(1, len(x) - 1)]) for x in s]
            end = [np.mean([x[-1][j][key] for j in range(1, len(x) - 1)]) for x in s]
            cells.append(f"{_mean_std(learned)} -> {_mean_std(end)}")
        lines.append(f"| {model} | {method} | {options.replace('|', '/')} | {len(rs)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def taught_table(runs: list[dict[str, Any]]) -> str:
    """Facts runs that also asked the question form trained on ("taught_match"): exact match on it
    and on the held-out paraphrases, learned -> end. A fact the model still answers in the trained
    form but not in the held-out ones has lost its paraphrases, not itself."""
    return _learned_to_end(runs, ("exact_match", "taught_match"),
                           "held-out: learned -> end | taught form: learned -> end")


def forms_table(runs: list[dict[str, Any]]) -> str:
    """Facts runs that asked each held-out question form alone ("held_out_K_match"), learned -> end:
    form 0 is the validation split's question where validation asks the test's facts, forms 1 and 2 the
    test split's, which a `valid_facts` validation asks of its own facts (which paraphrase fades?)."""
    return _learned_to_end(runs, tuple(f"held_out_{k}_match" for k in range(HELD_OUT_FORMS)),
                           "form 0 (validation's, without own facts) | form 1 (test) | form 2 (test, entity first)")


class _Batch(NamedTuple):
    learned: float  # exact match right after learning the batch
    end: float  # exact match after the last batch
    learned_after: int  # batches learned after it


def _batch_pairs(run: dict[str, Any]) -> list[_Batch]:
    """Each earlier batch (1..T-2); a batch learned at 0 has no ratio (nothing to keep) and is left out."""
    s = run["scores"]
    return [_Batch(s[j][j]["exact_match"], s[-1][j]["exact_match"], len(s) - 1 - j) for j in range(1, len(s) - 1)
            if s[j][j]["exact_match"] > 0]


def _learned_to_end_mean(batches: list[_Batch]) -> str:
    return (f"{np.mean([b.learned for b in batches]):.3f} -> {np.mean([b.end for b in batches]):.3f}"
            if batches else "-")


def _old_batch_steps(run: dict[str, Any]) -> list[float]:
    """How an earlier batch's exact match moves from one row to the next once it is old (rows k >= j+2,
    so the fall from the just-trained peak is left out): the reading's own noise, against which a
    per-batch floor is read."""
    s = run["scores"]
    return [s[k][j]["exact_match"] - s[k - 1][j]["exact_match"]
            for k in range(3, len(s)) for j in range(1, k - 1)]


def per_batch_table(runs: list[dict[str, Any]], floor: float = 0.9) -> str:
    """The facts target read batch by batch: the worst earlier batch's end / learned ratio of each seed
    (in seed order), how many earlier batches of all seeds end under `floor` of their just-learned
    exact match, what those batches and the others went from and to (means), how many batches each of
    those was learned before the end (a batch falls from its just-trained peak and replay may lift it
    again later, so a short batch that is recent differs from an old one lost), and the standard
    deviation of an old batch's row-to-row change (pooled over seeds). "Earlier facts kept" pools the
    batches, so one lost batch can hide behind others; the last column says how far one reading moves
    by itself."""
    lines = [f"| model | method | options | seeds | worst earlier batch, end / learned, per seed | "
             f"earlier batches under {floor:.0%} of learned | those: learned -> end | those: batches learned "
             "after each | the others: learned -> end | an old batch's row-to-row change, sd |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (_, model, method, options), rs in sorted(_groups(runs).items()):
        rs = sorted(rs, key=lambda r: r["config"].get("seed", 0))
        pairs = [_batch_pairs(r) for r in rs]
        worst = ", ".join(f"{min(b.end / b.learned for b in x):.3f}" if x else "-" for x in pairs)
        under = [b for x in pairs for b in x if b.end / b.learned < floor]
        after = ", ".join(str(n) for n in sorted(b.learned_after for b in under)) or "-"
        kept = [b for x in pairs for b in x if b.end / b.learned >= floor]
        steps = [v for r in rs for v in _old_batch_steps(r)]
        spread = f"{float(np.std(steps)):.3f}" if steps else "-"
        lines.append(f"| {model} | {method} | {options.replace('|', '/')} | {len(rs)} | {worst} | "
                     f"{len(under)} of {len(under) + len(kept)} | {_learned_to_end_mean(under)} | {after} | "
                     f"{_learned_to_end_mean(kept)} | {spread} |")
    return "\n".join(lines)


def importance_table(runs: list[dict[str, Any]]) -> str:
    """Per (size, method, options): the seconds after each learned task (EWC's Fisher pass; nothing
    for the other methods) against the seconds training on it, summed over the learned tasks (1..T-1),
    both wall clock in the same run."""
    groups = _groups(runs)
    lines = ["| model | method | options | seeds | training s per task | after-task s per task | "
             "after-task / training |", "|---|---|---|---|---|---|---|"]
    for (_, model, method, options), rs in sorted(groups.items()):
        learned = [[t for t in r["task_stats"] if t["task"] > 0] for r in rs]
        train = [sum(t["train_seconds"] for t in ts) / len(ts) for ts in learned]
        after = [sum(t["after_task_seconds"] for t in ts) / len(ts) for ts in learned]
        lines.append(f"| {model} | {method} | {options.replace('|', '/')} | {len(rs)} | {_mean_std(train)} | "
                     f"{_mean_std(after)} | {_mean_std([a / t for a, t in zip(after, train, strict=True)])} |")
    return "\n".join(lines)

def scaling_figure(runs: list[dict[str, Any]], cost_path: Path, out: Path,
                   other_options: Sequence[dict[str, Any]] = ()) -> None:
    """Naive forgetting, each method's gain over naive, and EWC's cost (from `cost_path`), against size.
    `runs` hold one set of options per method and size; `other_options` (a size that ran a method only at
    other options) are drawn as open markers beside the method's line, not joined to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["method"], r["parameters"]), []).append(r["metrics"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    sizes = sorted({p for _, p in by})
    naive = {p: np.mean([m["average_accuracy"] for m in by[("naive", p)]]) for p in sizes if ("naive", p) in by}
    for key, label in (("average_retention", "retention"), ("general_loss_ratio", "general loss after / before")):
        xs = [p for p in sizes if ("naive", p) in by]
        ys = [[m[key] for m in by[("naive", p)]] for p in xs]
        axes[0].errorbar(xs, [np.mean(y) for y in ys], [np.std(y) for y in ys], marker="o", label=f"naive {label}")
    axes[0].set(xscale="log", xlabel="parameters", title="naive fine-tuning: forgetting vs size")
    axes[0].legend()
    other: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in other_options:
        other.setdefault((r["method"], r["parameters"]), []).append(r["metrics"])
    tab20 = plt.get_cmap("tab20")
    colours = [tab20(i) for i in range(tab20.N)]
    for i, method in enumerate(sorted({m for m, _ in by} - {"naive"})):
        xs = [p for p in sizes if (method, p) in by and p in naive]
        if not xs:  # run only at sizes without a naive run: no gain to draw
            continue
        gains = [[m["average_accuracy"] - naive[p] for m in by[(method, p)]] for p in xs]
        style = {"color": colours[i % len(colours)], "marker": "osD^v"[i % 5], "capsize": 2}
        axes[1].errorbar(xs, [np.mean(g) for g in gains], [np.std(g) for g in gains], label=method, **style)
        open_xs = [p for (m, p) in other if m == method and p in naive]
        if open_xs:
            gains = [[m["average_accuracy"] - naive[p] for m in other[(method, p)]] for p in open_xs]
            axes[1].errorbar(open_xs, [np.mean(g) for g in gains], [np.std(g) for g in gains], ls="none",
                             mfc="none", **style)
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].set(xscale="log", xlabel="parameters", ylabel="final next-byte accuracy - naive's",
                title="benefit vs size (text-domains; open: other options)")
    axes[1].legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    if cost_path.exists():
        cost = json.loads(cost_path.read_text()).get("single", [])
        xs = [r["parameters"] for r in cost]
        axes[2].plot(xs, [r["step_ratio_min"] for r in cost], marker="o", label="EWC step / naive step")
        axes[2].plot(xs, [1 + r["penalty_share_of_step"] for r in cost], marker="s", label="1 + penalty alone / step")
        axes[2].axhline(1.02, color="grey", ls="--", lw=0.8, label="the issue's target, 1.02")
        axes[2].set(xscale="log", xlabel="parameters", title="cost vs size (one core, 1,024 tokens/step)")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
