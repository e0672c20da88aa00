"""The commands of benchmarks/lm.py that read saved runs and train nothing: `table`, `figure`, `compare` and
`choose` (a method's options from its validation runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lm_compare import compare, markdown
from lm_jobs import load, run_key
from lm_methods import (
    BASELINE,
    METHODS,
    PLASTICITY_FLOOR,
    PLASTICITY_GAIN,
    SETTINGS,
    TUNED_FROM,
    TUNING,
    _options,
    plasticity_floor,
    tuned_options,
)
from lm_plan import ROOT, configured_runs, planned_key, result_path
from lm_report import (
    _shown,
    forms_table,
    importance_table,
    per_batch_table,
    pretrained_table,
    scaling_figure,
    table,
    taught_table,
    untouched_accuracy,
)

from lifelong.reporting import write_json


def cmd_choose(args: argparse.Namespace) -> int:
    """Pick a method's options from the validation runs: the best final validation accuracy among the
    options that learn at least plasticity_floor() (seed 0 of the baseline, as configured now). Options
    fixed by a part the method is tuned from (the LoRA rank) are held: only runs with them count."""
    valid = argparse.Namespace(setting=args.setting, split="valid", device="cpu", out=None)
    runs = load(result_path(valid))["runs"]
    for size in args.sizes.split(","):
        baseline = BASELINE.get(args.method, "naive")
        configured = planned_key(valid, size, *_options(args.setting, size, baseline, {}), 0)
        baselines = sorted((r for r in runs if r["method"] == baseline and r["config"]["model"] == size),
                           key=lambda r: run_key(r) != configured)  # the configured baseline first, if it ran
        fixed: dict[str, Any] = {}
        for part in TUNED_FROM.get(args.method, []):
            fixed.update(tuned_options(args.setting, size, part) if part != args.method else {})
        tried = [r for r in runs if r["method"] == args.method and r["config"]["model"] == size
                 and all(_shown(r["config"]).get(k) == v for k, v in fixed.items())]
        if not baselines or not tried:
            print(f"{size}: no validation runs of {baseline} and {args.method}", file=sys.stderr)
            continue
        reference = baselines[0]
        untouched = untouched_accuracy(reference)
        floor = plasticity_floor(reference["metrics"]["learning_accuracy"], untouched)
        ok = [r for r in tried if r["metrics"]["learning_accuracy"] >= floor] or tried
        best = max(ok, key=lambda r: r["metrics"]["average_accuracy"])
        shown = [_shown(r["config"]) for r in tried]
        varied = {k for o in shown for k, v in o.items() if any(q.get(k) != v for q in shown)}
        best_shown = shown[tried.index(best)]
        chosen = {k: best_shown[k] for k in sorted(varied) if k in best_shown}
        path = TUNING / f"lm-{args.setting}-{size}-{args.method}.json"
        write_json(path, {"setting": args.setting, "size": size, "method": args.method, "chosen": chosen,
                          "rule": f"best final validation accuracy with learning accuracy >= {floor:.4f}: "
                                  f"{baseline}'s - {PLASTICITY_FLOOR}, and at least {PLASTICITY_GAIN} of its gain "
                                  "over the untouched model",
                          "fixed": fixed,
                          "baseline": {"method": baseline, "options": _shown(reference["config"]), **{
                              k: reference["metrics"][k] for k in ("average_accuracy", "learning_accuracy")}},
                          "untouched": untouched,
                          "tried": [{"options": o, **{k: r["metrics"][k] for k in (
                              "average_accuracy", "learning_accuracy", "average_retention", "general_loss_ratio")}}
                              for o, r in zip(shown, tried, strict=True)]})
        print(f"{size} {args.method}: {chosen} (learning floor {floor:.3f}) -> {path.relative_to(ROOT)}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    path = result_path(args)
    runs = load(path)["runs"]
    print(f"`{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`: {len(runs)} runs\n")
    if args.methods:  # these methods and their equal-bytes controls
        wanted = {m for name in args.methods.split(",") for m in (name, f"replay@{name}")}
        runs = [r for r in runs if r["method"] in wanted]
    if args.sizes:
        runs = [r for r in runs if r["config"]["model"] in args.sizes.split(",")]
    if args.seeds:  # one seed's runs alone: what a mean over seeds hides
        runs = [r for r in runs if str(r["config"]["seed"]) in args.seeds.split(",")]
    facts = SETTINGS[args.setting]["benchmark"] == "facts"
    print(table(runs, facts=facts))
    if not facts and any(r["metrics"].get("pretrained") for r in runs):
        print("\n" + pretrained_table(runs))
    if args.importance:
        print("\n" + importance_table(runs))
    if facts:
        print("\n" + per_batch_table(runs))
    if facts and any("taught_match" in r["scores"][-1][-1] for r in runs):
        print("\n" + taught_table(runs))
    if facts and any("held_out_0_match" in r["scores"][-1][-1] for r in runs):
        print("\n" + forms_table(runs))
    return 0


def runs_at_other_options(runs: list[dict[str, Any]], configured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of a method at a size where it ran only at other options than those configured now (gpt-16m's,
    before any validation there), where they are one set of options, of a method configured at another size."""
    have = {(r["method"], r["config"]["model"]) for r in configured}
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        if r["method"] in METHODS and (r["method"], r["config"]["model"]) not in have:
            by.setdefault((r["method"], r["config"]["model"]), []).append(r)
    return [r for (method, _), rs in by.items() if any(m == method for m, _ in have)
            and len({json.dumps(_shown(r["config"]), sort_keys=True) for r in rs}) == 1 for r in rs]


def replace_runs(runs: list[dict[str, Any]], others: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`runs` with every run of the same configuration as one in `others` replaced by that one."""
    keys = {run_key(r) for r in others}
    return [r for r in runs if run_key(r) not in keys] + others


def cmd_figure(args: argparse.Namespace) -> int:
    """docs/figures/lm-scaling.png, from the domains result file (`--out`, else results/lm-domains.json: the
    configured runs) and results/lm-cost.json.
    A run in a `--replace-from` file replaces the run of the same configuration (a run key leaves out the
    device), so that a size whose methods trained on another device than its baselines is drawn from one
    device: gpt-16m's own options ran on the CPU, its first naive and replay seeds on a GPU."""
    if args.setting != "domains":
        print("figure draws the text-domains scaling study: use --setting domains", file=sys.stderr)
        return 2
    out = ROOT / "docs" / "figures" / "lm-scaling.png"
    runs = load(result_path(args))["runs"]
    for path in args.replace_from:
        runs = replace_runs(runs, load(Path(path))["runs"])
    configured = configured_runs("domains", runs)
    scaling_figure(configured, ROOT / "results" / "lm-cost.json", out, runs_at_other_options(runs, configured))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Per seed, each method's metric minus `--against`'s (lm_compare.py)."""
    runs = [r for path in [result_path(args), *map(Path, args.also)] for r in load(path)["runs"]]
    if args.device:
        runs = [r for r in runs if r["config"].get("device", "cpu").split(":")[0] == args.device]
    rows = [row for method in args.methods for row in compare(
        runs, configured_runs(args.setting, runs, args.split), method, args.against, args.metric,
        args.sizes.split(",") if args.sizes else None)]
    if not rows:
        print(f"no runs of {', '.join(args.methods)} in {result_path(args)}{' or ' if args.also else ''}"
              f"{', '.join(args.also)} (with --sizes/--device as given)", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0
