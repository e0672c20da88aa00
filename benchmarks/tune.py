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

`--seeds 0,1,2` measures every grid point on each seed and chooses on the means (naive's floor is the
mean of naive's seeds too); rows of earlier tunings join under their own seed, so a single-seed search
and its later seeds make one choice.

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
    earlier tuning of the same setting ran it in the same regime (saves one run per strategy);
    one file per seed, so that tunings of several seeds do not overwrite each other's."""
    path = Path(f"results/tuning/{key}-naive{'' if base.seed == 0 else f'-seed{base.seed}'}.json")
    regime = base.to_dict() if args.setting else {**_regime(args), "seed": base.seed}
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


SCORES = ("average_accuracy", "learning_accuracy", "average_retention")


def _scores(r: dict[str, Any]) -> str:
    return (f"final {r['average_accuracy']:.3f} learning {r['learning_accuracy']:.3f} "
            f"retention {r['average_retention']:.3f}")


def _point(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True)


def _reused_rows(paths: list[str], args: argparse.Namespace, base: RunConfig,
                 seeds: list[int]) -> list[dict[str, Any]]:
    """The rows of earlier tunings of this strategy in this regime (validation split, one of these seeds,
    setting or flags), each marked with its file and seed; one row per grid point and seed."""
    same = ("setting", "validation") if args.setting else tuple(k for k in _regime(args) if k != "seed")
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        ran = saved.get("learner", {})
        if (saved.get("strategy") != args.strategy or saved.get("split") != "valid"
                or not set(saved.get("seeds", [saved.get("seed")])) & set(seeds)
                or any(ran.get(k) != getattr(args, k) for k in same)):
            raise SystemExit(f"{path}: not a validation tuning of {args.strategy} with seed {_seeds_text(seeds)} "
                             "in this regime; its rows cannot join this one")
        for row in saved["rows"]:
            seed = row.get("seed", saved.get("seed"))
            if row.get("strategy") == "naive" or seed not in seeds:
                continue
            options = _plain(row["options"], base)
            rows.setdefault((seed, _point(options)),
                            {**row, "options": options, "seed": seed, "from": row.get("from", str(path))})
    return list(rows.values())


def _seeds_text(seeds: list[int]) -> str:
    return ",".join(map(str, seeds))


def _choose(rows: list[dict[str, Any]], naive: list[dict[str, Any]], seeds: list[int],
            margin: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the best final accuracy, averaged over the seeds, among those whose mean
    learning accuracy stays within `margin` of naive's mean; points not measured on every seed are
    not candidates. Returns the chosen row and one row of means a point."""
    by_point: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_point.setdefault(_point(r["options"]), []).append(r)
    means = [{"options": rs[0]["options"], "seeds": sorted(r["seed"] for r in rs),
              **{k: sum(r[k] for r in rs) / len(rs) for k in SCORES}}
             for rs in by_point.values() if {r["seed"] for r in rs} >= set(seeds)]
    if not means:
        raise SystemExit(f"no grid point was measured on every seed ({_seeds_text(seeds)})")
    floor = sum(n["learning_accuracy"] for n in naive) / len(naive) - margin
    eligible = [m for m in means if m["learning_accuracy"] >= floor] or means
    return max(eligible, key=lambda m: m["average_accuracy"]), means


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
    p.add_argument("--seeds", help="comma-separated seeds; the choice is on their mean (default: --seed)")
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
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    out = args.out or f"results/tuning/{key}-{'+'.join(split_name(args.strategy))}.json"

    partial = Path(out).with_suffix(".partial.json")

    def save(chosen: dict[str, Any] | None, means: list[dict[str, Any]]) -> None:
        """The rows so far go to OUT.partial.json after every run (a stopped search keeps them, and
        `--reuse` takes them); OUT itself, which benchmarks read their choice from, only gets the end."""
        rule = (f"best final accuracy (mean of seeds {_seeds_text(seeds)}) with learning accuracy >= naive's - "
                f"{args.max_plasticity_loss}")
        write_json(out if chosen is not None else partial, {
            "benchmark": base.stream.benchmark, "scenario": naives[0]["scenario"], "strategy": args.strategy,
            "split": "valid", "validation": args.validation, "seed": seeds[0], "seeds": seeds,
            "learner": vars(args), "rows": rows, "means": means, "chosen": chosen, "rule": rule,
            "environment": environment()})

    reused = _reused_rows(args.reuse, args, base, seeds)
    rows: list[dict[str, Any]] = []
    naives = []
    for seed in seeds:
        seeded_base = replace(base, seed=seed)
        naive = _naive(seeded_base, args, key)
        naives.append(naive)
        rows.append({"options": {}, "strategy": "naive", "seed": seed,
                     **{k: naive[k] for k in (*SCORES, "seconds")}})
        print(f"seed {seed} naive: {_scores(naive)}", flush=True)
        mine = [r for r in reused if r["seed"] == seed]
        for r in mine:
            print(f"seed {seed} {args.strategy} {r['options']}: {_scores(r)} (from {r['from']})", flush=True)
        rows += mine
        measured = {_point(r["options"]) for r in mine}
        for values in itertools.product(*grid.values()):
            options = {**fixed, **dict(zip(grid, values, strict=True))}
            if _point(_plain(options, base)) in measured:
                continue
            learner = {k.removeprefix("learner."): options.pop(k) for k in list(options) if k.startswith("learner.")}
            r = run(replace(seeded_base, strategy=args.strategy, strategy_options=options,
                            learner=replace(base.learner, **learner))).record
            options = _plain({**options, **{f"learner.{k}": v for k, v in learner.items()}}, base)
            rows.append({"options": options, "strategy": args.strategy, "seed": seed,
                         **{k: r[k] for k in (*SCORES, "seconds")}})
            print(f"seed {seed} {args.strategy} {options}: {_scores(r)} ({r['seconds']:.0f} s)", flush=True)
            save(None, [])
    best, means = _choose([r for r in rows if r["strategy"] != "naive"], naives, seeds, args.max_plasticity_loss)
    if len(seeds) > 1:
        for m in means:
            print(f"mean of seeds {_seeds_text(seeds)} {m['options']}: {_scores(m)}", flush=True)
    print(f"chosen on validation: {best['options']}", flush=True)
    save(best["options"], means)
    partial.unlink(missing_ok=True)
    print(f"written to {Path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
