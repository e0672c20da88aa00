"""Choose strategy hyperparameters on a validation split, never on the test set.

Each task's training data loses its last `--validation` share (default 10 %), which is what the
runs here are scored on; the test set is not read. The chosen value is the one with the best final
average accuracy among those whose learning accuracy stays within `--max-plasticity-loss` of
naive's (a strength that stops learning would otherwise win on retention alone).

    python benchmarks/tune.py --benchmark permuted-fmnist --strategy ewc --grid strength=100,300,1000
    python benchmarks/tune.py --setting language:frozen-task --strategy ewc --grid strength=100,1000
    python benchmarks/tune.py --setting class_il:split-fmnist-fixed --strategy agem --grid learner.lr=0.01,0.03,0.1

A grid key `learner.OPTION` varies the training regime for this strategy (A-GEM's SGD learning rate).

`--reuse FILE` (repeatable) searches one coordinate after another: the rows of an earlier tuning of the
same strategy, seed and regime join this one's candidates (and its file), and grid points measured
there are not run again:

    python benchmarks/tune.py --setting language:finetune-task --strategy online-kfac-ewc \
        --grid strength=1e4 --grid learner.lr=2e-4,3e-4 \
        --reuse results/tuning/clinc150-task-finetune-online-kfac-ewc.json

`--setting MODULE:NAME` takes the exact regime of a benchmark script's setting (benchmarks/MODULE.py)
and writes results/tuning/<the setting's tuning key>-<strategy>.json, which that script then reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from lifelong.data.streams import StreamConfig, check
from lifelong.learner import LearnerConfig
from lifelong.reporting import environment, write_json
from lifelong.run import ModelConfig, RunConfig, run
from lifelong.strategies import split_name


def _regime(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("benchmark", "scenario", "tasks", "seed", "epochs", "lr", "dropout",
                                          "hidden", "validation")}


def _naive(base: RunConfig, args: argparse.Namespace, key: str) -> dict:
    """Naive's validation run in this regime: the floor the rule compares with. Reused when an
    earlier tuning of the same setting ran it in the same regime (saves one run per strategy)."""
    path = Path(f"results/tuning/{key}-naive.json")
    regime = base.to_dict() if args.setting else _regime(args)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("regime") == json.loads(json.dumps(regime)):
            return saved["result"]
    result = run(base).record
    keep = {k: result[k] for k in ("average_accuracy", "learning_accuracy", "average_retention", "seconds",
                                   "accuracy_matrix", "scenario")}
    write_json(path, {"regime": regime, "result": keep, "environment": environment()})
    return keep


def _plain(options: dict[str, Any], base: RunConfig) -> dict[str, Any]:
    """A grid point's options without `learner.` keys at the regime's own value (so a point that
    does not name the learning rate and one that names the regime's rate are the same point)."""
    return {k: v for k, v in options.items()
            if not (k.startswith("learner.") and getattr(base.learner, k.removeprefix("learner."), None) == v)}


def _point(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True)


def _reused_rows(paths: list[str], args: argparse.Namespace, base: RunConfig) -> list[dict[str, Any]]:
    """The rows of earlier tunings of this strategy in this regime (validation split, seed, setting or
    flags), each marked with its file; one row per grid point."""
    same = ("setting", "validation") if args.setting else tuple(_regime(args))
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        ran = saved.get("learner", {})
        if (saved.get("strategy") != args.strategy or saved.get("split") != "valid" or saved.get("seed") != args.seed
                or any(ran.get(k) != getattr(args, k) for k in same)):
            raise SystemExit(f"{path}: not a validation tuning of {args.strategy} with seed {args.seed} in this "
                             "regime; its rows cannot join this one")
        for row in saved["rows"]:
            if row.get("strategy") == "naive":
                continue
            options = _plain(row["options"], base)
            rows.setdefault(_point(options), {**row, "options": options, "from": row.get("from", str(path))})
    return list(rows.values())


def _from_setting(args: argparse.Namespace) -> tuple[RunConfig, str, dict[str, Any]]:
    """The naive run config of a benchmark setting, scored on validation data, its tuning key, and
    the setting's fixed options for the strategy (e.g. its memory budget)."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    module, _, name = args.setting.partition(":")
    setting = importlib.import_module(module).SETTINGS[name]
    from suite import tuned_options

    stream = setting.stream
    if stream.benchmark != "clinc150":  # CLINC150 has its own validation split; the others hold out 10 %
        stream = replace(stream, validation=args.validation)
    base = RunConfig(stream, "naive", {}, setting.learner, setting.model, args.seed, "valid",
                     mode=setting.mode, rl_steps=setting.rl_steps)
    fixed = {k: v for k, v in tuned_options(setting, args.strategy)[0].items() if k == "memory"}
    fixed.update(setting.options.get(args.strategy, {}))
    # the strategy's own training regime (A-GEM: SGD), as a fixed learner option of its runs
    own = setting.learner_for(args.strategy)
    fixed.update({f"learner.{k}": v for k, v in own.to_dict().items() if getattr(setting.learner, k) != v})
    return base, setting.tuning, fixed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", help="MODULE:NAME of a benchmark script's setting, e.g. vision:permuted")
    p.add_argument("--benchmark")
    p.add_argument("--scenario")
    p.add_argument("--tasks", type=int)
    p.add_argument("--strategy", required=True)
    p.add_argument("--grid", action="append", default=[], help="OPTION=v1,v2,... (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--hidden", default="400,400")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--max-plasticity-loss", type=float, default=0.05)
    p.add_argument("--out", help="JSON file (default: results/tuning/BENCHMARK-SCENARIO-STRATEGY.json)")
    p.add_argument("--reuse", action="append", default=[], metavar="FILE",
                   help="an earlier tuning's rows join the candidates; its grid points are not run again")
    args = p.parse_args()

    grid = {}
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key] = [json.loads(v) for v in values.split(",")]
    fixed: dict = {}
    if args.setting:
        base, key, fixed = _from_setting(args)
    else:
        if not args.benchmark:
            p.error("give --setting or --benchmark")
        base = RunConfig(StreamConfig(args.benchmark, args.scenario, args.tasks, validation=args.validation),
                         "naive", {}, LearnerConfig(epochs=args.epochs, lr=args.lr),
                         ModelConfig("mlp", tuple(int(h) for h in args.hidden.split(",")), args.dropout),
                         args.seed, "valid")
        key = f"{args.benchmark}-{check(base.stream)[0]}"
    rows = []
    naive = _naive(base, args, key)
    rows.append({"options": {}, "strategy": "naive", **{k: naive[k] for k in
                 ("average_accuracy", "learning_accuracy", "average_retention", "seconds")}})
    print(f"naive: final {naive['average_accuracy']:.3f} learning {naive['learning_accuracy']:.3f} "
          f"retention {naive['average_retention']:.3f}", flush=True)
    reused = _reused_rows(args.reuse, args, base)
    measured = {_point(r["options"]) for r in reused}
    for r in reused:
        print(f"{args.strategy} {r['options']}: final {r['average_accuracy']:.3f} learning "
              f"{r['learning_accuracy']:.3f} retention {r['average_retention']:.3f} (from {r['from']})", flush=True)
    rows += reused
    for values in itertools.product(*grid.values()):
        options = {**fixed, **dict(zip(grid, values, strict=True))}
        if _point(_plain(options, base)) in measured:
            continue
        learner = {k.removeprefix("learner."): options.pop(k) for k in list(options) if k.startswith("learner.")}
        r = run(replace(base, strategy=args.strategy, strategy_options=options,
                        learner=replace(base.learner, **learner))).record
        options = _plain({**options, **{f"learner.{k}": v for k, v in learner.items()}}, base)
        rows.append({"options": options, "strategy": args.strategy, **{k: r[k] for k in
                     ("average_accuracy", "learning_accuracy", "average_retention", "seconds")}})
        print(f"{args.strategy} {options}: final {r['average_accuracy']:.3f} learning {r['learning_accuracy']:.3f} "
              f"retention {r['average_retention']:.3f} ({r['seconds']:.0f} s)", flush=True)
    floor = naive["learning_accuracy"] - args.max_plasticity_loss
    eligible = [r for r in rows[1:] if r["learning_accuracy"] >= floor] or rows[1:]
    best = max(eligible, key=lambda r: r["average_accuracy"])
    print(f"chosen on validation: {best['options']}", flush=True)
    scenario = naive["scenario"]
    out = args.out or f"results/tuning/{key}-{'+'.join(split_name(args.strategy))}.json"
    write_json(out, {"benchmark": base.stream.benchmark, "scenario": scenario, "strategy": args.strategy,
                     "split": "valid", "validation": args.validation, "seed": args.seed,
                     "learner": vars(args), "rows": rows, "chosen": best["options"],
                     "rule": f"best final accuracy with learning accuracy >= naive's - {args.max_plasticity_loss}",
                     "environment": environment()})
    print(f"written to {Path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
