"""Language models that keep learning: continual GPT runs, resumable, every run saved as it ends.

    python benchmarks/lm.py run --setting domains --sizes gpt-0.2m,gpt-1m --methods naive,ewc --seeds 0,1,2
    python benchmarks/lm.py run --setting domains --split valid --methods ewc --set ewc.strength=10,100
    python benchmarks/lm.py choose --setting domains --method ewc --sizes gpt-0.2m,gpt-1m
    python benchmarks/lm.py table --setting domains [--importance]
    python benchmarks/lm.py compare --against equal-bytes ewc distill+replay   # per seed, minus the control
    python benchmarks/lm.py snapshot --dir corpora/      # the text, for a machine without it (LIFELONG_CORPORA)
    python benchmarks/lm.py merge --setting domains part-*.json   # runs from elsewhere (a GPU host) into the file

Settings (SETTINGS in lm_methods.py): `probe` is the issue's probe (no pre-training, 4 domains of 300 steps of
32 x 128 bytes); `domains` pre-trains on the general mixture first, then learns the 4 domains;
`facts` pre-trains the same way, then learns 10 batches of new facts (`facts-long`: twice the steps;
`facts-wide`: twice the facts a batch, validated on fact batches of its own in the test's question
forms, where the other facts settings validate on the test's facts in a third form). A method is a strategy name
with options (METHODS, lm_methods.py); `replay=` in a method's options is the replay budget as a share of the text
the run trains on, turned into tokens by `_options`. `--equal-bytes` adds, for each method that stores more
than the plain replay, a token-replay run given exactly that method's stored bytes.

Runs go to results/lm-<setting>[-valid].json (`--out`), one entry per (size, method, options, seed):
a run already there with the same configuration is not run again (`--resume`). Processes may share a
file (each run is added under a lock); `--jobs N` runs N at a time, one process each (a GPU). `--set`
values are tried one run each (tuning on `--split valid`); `table` prints the Markdown tables from the file.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lm_compare import compare, markdown
from lm_jobs import load as _load
from lm_jobs import merge_runs, run_processes, save_run
from lm_jobs import run_key as _key
from lm_methods import (
    BASELINE,
    METHODS,
    NO_EQUAL_BYTES,
    PLASTICITY_FLOOR,
    PLASTICITY_GAIN,
    SETTINGS,
    TUNED_FROM,
    TUNING,
    _options,
    plasticity_floor,
    tuned_options,
)
from lm_report import (  # noqa: F401  (re-exported: tests read them through lm)
    _devices,
    _facts_kept,
    _shown,
    forms_table,
    importance_table,
    per_batch_table,
    pretrained_table,
    scaling_figure,
    table,
    taught_table,
)

from lifelong.data.corpora import SNAPSHOT_ENV, save_snapshot
from lifelong.lm.run import LMRunConfig, run_lm
from lifelong.reporting import environment, write_json

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LIFELONG_CACHE", Path.home() / ".cache" / "lifelong")) / "lm"

def _config(args: argparse.Namespace, size: str, strategy: str, options: dict[str, Any], seed: int) -> LMRunConfig:
    """The run of `strategy` with `options`; `lora` (the adapters' rank) and `lr` (Adam's learning rate) are
    the run's options, not the strategy's."""
    setting = SETTINGS[args.setting]
    options = dict(options)
    run = {"lora_rank": int(options.pop("lora", 0)), "lr": float(options.pop("lr", LMRunConfig.lr))}
    data = setting["data"]
    if args.split == "valid" and setting.get("valid_facts"):
        data = replace(data, facts=replace(data.facts, valid_facts=True))
    return LMRunConfig(setting["benchmark"], size, strategy, options, replace(data), eval_split=args.split,
                       seed=seed, cache_dir=str(CACHE), device=args.device, **run)


JSON_WORDS = ("true", "false", "null")  # --set values read as JSON (with numbers, lists and objects)


def _parse_sets(items: list[str]) -> list[dict[str, Any]]:
    """--set ewc.strength=1,10 --set ewc.samples=64 -> one options dict per combination."""
    axes = []
    for item in items:
        key, _, values = item.partition("=")
        if not values:
            raise SystemExit(f"--set takes OPTION=VALUE[,VALUE...], not {item!r}")
        as_json = [json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" or v in JSON_WORDS else v
                   for v in values.split(",")]
        axes.append([(key.split(".", 1)[-1], v) for v in as_json])
    return [dict(combo) for combo in itertools.product(*axes)] or [{}]


def _out(args: argparse.Namespace) -> Path:
    return Path(args.out or ROOT / "results" / f"lm-{args.setting}{'-valid' if args.split == 'valid' else ''}.json")


def _combinations(args: argparse.Namespace) -> list[tuple[str, int, str, dict[str, Any]]]:
    sizes = args.sizes.split(",") if args.sizes else SETTINGS[args.setting]["sizes"]
    combos = list(itertools.product(sizes, [int(s) for s in args.seeds.split(",")], args.methods.split(","),
                                    _parse_sets(args.set)))
    unknown = sorted({m for _, _, m, _ in combos} - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return combos


def _planned_key(args: argparse.Namespace, size: str, strategy: str, options: dict[str, Any], seed: int) -> str:
    """The key (lm_jobs.run_key) that the run of `strategy` with `options` has, or will have once it ran."""
    return _key({"config": _config(args, size, strategy, options, seed).to_dict()})


def _equal_bytes_options(args: argparse.Namespace, size: str, seed: int, strategy: str, options: dict[str, Any],
                         runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The token-replay control's options for the run of `strategy` with `options` (None until it has run):
    a budget of exactly its stored bytes, in the same model (LoRA adapters of the same rank, the same lr)."""
    key = _planned_key(args, size, strategy, options, seed)
    ref = next((r for r in runs if _key(r) == key), None)
    if ref is None:
        return None
    return {"tokens": int(ref["stored_bytes"]), **{k: options[k] for k in ("lora", "lr") if k in options}}


def cmd_run(args: argparse.Namespace) -> int:
    if args.jobs > 1:
        return run_parallel(args)
    torch.set_num_threads(args.threads)
    out = _out(args)
    saved = _load(out)
    done = {_key(r) for r in saved["runs"]}
    for size, seed, method, extra in _combinations(args):
        strategy, options = _options(args.setting, size, method, extra)
        plans: list[tuple[str, str, dict[str, Any] | None]] = [(method, strategy, options)]
        if args.equal_bytes and method not in NO_EQUAL_BYTES:
            plans.append((f"replay@{method}", "token-replay", None))
        for label, strat, opts in plans:
            if opts is None:  # equal bytes: the stored bytes of this very run of `method`
                opts = _equal_bytes_options(args, size, seed, strategy, options, saved["runs"])
                if opts is None:
                    continue
            config = _config(args, size, strat, opts, seed)
            probe = {"config": config.to_dict()}
            # re-read where it is not known done: another process sharing the file may have run it since
            if args.resume and (_key(probe) in done or _key(probe) in {_key(r) for r in _load(out)["runs"]}):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {args.setting} {size} {label} {opts} seed {seed}", flush=True)
            result = run_lm(config, log=lambda m: print("   ", m, flush=True))
            result.update({"method": label, "setting": args.setting, "environment": environment()})
            saved["runs"] = [r for r in saved["runs"] if _key(r) != _key(result)] + [result]
            done.add(_key(result))
            save_run(out, result)
            m = result["metrics"]
            print(f"    final {m['average_accuracy']:.3f} learning {m['learning_accuracy']:.3f} retention "
                  f"{m['average_retention']:.3f} general loss x{m['general_loss_ratio']:.3f} "
                  f"bytes {result['stored_bytes']:,} {result['seconds']:.0f} s", flush=True)
    return 0


def _missing(args: argparse.Namespace, size: str, seed: int, method: str, strategy: str, options: dict[str, Any],
             runs: list[dict[str, Any]]) -> bool:
    """Whether the run of `method`, or (under --equal-bytes) its control once the run is there, is not in `runs`."""
    done = {_key(r) for r in runs}
    if _planned_key(args, size, strategy, options, seed) not in done:
        return True
    if not args.equal_bytes or method in NO_EQUAL_BYTES:
        return False
    control = _equal_bytes_options(args, size, seed, strategy, options, runs) or {}
    return _planned_key(args, size, "token-replay", control, seed) not in done


def run_parallel(args: argparse.Namespace) -> int:
    """`run --jobs N`: every (size, seed, method, options) as its own process, N at a time (small GPTs
    leave a GPU mostly idle, one process each fills it), each writing a part file beside the output
    (`<out>.parts/`); the parts are merged into the output as they finish."""
    out = _out(args)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    saved = _load(out)
    queue: list[tuple[str, list[str], Callable[[], bool]]] = []
    for size, seed, method, extra in _combinations(args):
        strategy, options = _options(args.setting, size, method, extra)
        mine = [r for r in saved["runs"] if r["config"]["model"] == size and r["config"]["seed"] == seed
                and r["method"] in (method, f"replay@{method}")]
        missing = functools.partial(_missing, args, size, seed, method, strategy, options)
        if args.resume and not missing(saved["runs"]):
            continue
        values = "-".join(f"{k}{v}" for k, v in extra.items())
        name = f"{size}-{method.replace('+', '_')}-s{seed}{'-' + values if values else ''}"
        part = parts / f"{name}.json"
        if args.resume and mine and not part.exists():  # the reference run that equal bytes reads
            write_json(part, {"runs": mine})
        command = [sys.executable, __file__, "run", "--setting", args.setting, "--split", args.split, "--sizes", size,
                   "--methods", method, "--seeds", str(seed), "--device", args.device, "--threads", str(args.threads),
                   "--out", str(part), "--resume"]
        command += [a for k, v in extra.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
        command += ["--equal-bytes"] if args.equal_bytes else []
        # checked again as the job starts: another command sharing `out` may have run it by then
        queue.append((name, command, lambda m=missing: not args.resume or m(_load(out)["runs"])))
    return run_processes(queue, args.jobs, parts, out, args.setting, args.split)


def cmd_snapshot(args: argparse.Namespace) -> int:
    for path in save_snapshot(args.dir, max_bytes=SETTINGS["domains"]["data"].max_bytes):
        print(f"{path} {path.stat().st_size:,} bytes")
    print(f"read them with {SNAPSHOT_ENV}={args.dir}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Runs of other result files (one per parallel process, or from another machine) into the setting's
    file; a run already there with the same configuration is kept, not replaced."""
    out = _out(args)
    added = merge_runs(out, args.setting, args.split, [Path(f) for f in args.files])
    print(f"{added} run(s) added to {out} ({len(_load(out)['runs'])} in all)")
    return 0


def _untouched(run: dict[str, Any]) -> float | None:
    """The pre-trained model's mean next-token accuracy over the domains before it learns any (row 0), where
    recorded (facts runs score exact match, where the untouched model answers next to nothing: None)."""
    if not run["metrics"].get("pretrained") or "accuracy" not in run["scores"][0][-1]:
        return None
    return float(sum(s["accuracy"] for s in run["scores"][0][1:]) / (len(run["scores"][0]) - 1))


def cmd_choose(args: argparse.Namespace) -> int:
    """Pick a method's options from the validation runs: the best final validation accuracy among the
    options that learn at least plasticity_floor() (seed 0 of the baseline, as configured now). Options
    fixed by a part the method is tuned from (the LoRA rank) are held: only runs with them count."""
    runs = _load(ROOT / "results" / f"lm-{args.setting}-valid.json")["runs"]
    valid = argparse.Namespace(setting=args.setting, split="valid", device="cpu")
    for size in args.sizes.split(","):
        baseline = BASELINE.get(args.method, "naive")
        configured = _planned_key(valid, size, *_options(args.setting, size, baseline, {}), 0)
        baselines = sorted((r for r in runs if r["method"] == baseline and r["config"]["model"] == size),
                           key=lambda r: _key(r) != configured)  # the configured baseline first, if it ran
        fixed: dict[str, Any] = {}
        for part in TUNED_FROM.get(args.method, []):
            fixed.update(tuned_options(args.setting, size, part) if part != args.method else {})
        tried = [r for r in runs if r["method"] == args.method and r["config"]["model"] == size
                 and all(_shown(r["config"]).get(k) == v for k, v in fixed.items())]
        if not baselines or not tried:
            print(f"{size}: no validation runs of {baseline} and {args.method}", file=sys.stderr)
            continue
        reference = baselines[0]
        floor = plasticity_floor(reference["metrics"]["learning_accuracy"], _untouched(reference))
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
                          "untouched": _untouched(reference),
                          "tried": [{"options": o, **{k: r["metrics"][k] for k in (
                              "average_accuracy", "learning_accuracy", "average_retention", "general_loss_ratio")}}
                              for o, r in zip(shown, tried, strict=True)]})
        print(f"{size} {args.method}: {chosen} (learning floor {floor:.3f}) -> {path.relative_to(ROOT)}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    path = _out(args)
    runs = _load(path)["runs"]
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


def configured_runs(setting: str, runs: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """The runs at the options each method is configured with at its size now (validation's choices): a
    method also run at other options (LoRA ranks, strengths tried before a size had its own validation)
    counts once, at the options its table row and README figure name. Equal-bytes controls are left out."""
    args = argparse.Namespace(setting=setting, split=split, device="cpu")
    return [r for r in runs if r["method"] in METHODS and _key(r) == _planned_key(
        args, r["config"]["model"], *_options(setting, r["config"]["model"], r["method"], {}), r["config"]["seed"])]


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
    keys = {_key(r) for r in others}
    return [r for r in runs if _key(r) not in keys] + others


def cmd_figure(args: argparse.Namespace) -> int:
    """docs/figures/lm-scaling.png, from results/lm-domains.json (the configured runs) and results/lm-cost.json.
    A run in a `--replace-from` file replaces the run of the same configuration (a run key leaves out the
    device), so that a size whose methods trained on another device than its baselines is drawn from one
    device: gpt-16m's own options ran on the CPU, its first naive and replay seeds on a GPU."""
    out = ROOT / "docs" / "figures" / "lm-scaling.png"
    runs = _load(ROOT / "results" / "lm-domains.json")["runs"]
    for path in args.replace_from:
        runs = replace_runs(runs, _load(Path(path))["runs"])
    configured = configured_runs("domains", runs)
    scaling_figure(configured, ROOT / "results" / "lm-cost.json", out, runs_at_other_options(runs, configured))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Per seed, each method's metric minus `--against`'s (lm_compare.py)."""
    runs = [r for path in [_out(args), *map(Path, args.also)] for r in _load(path)["runs"]]
    if args.device:
        runs = [r for r in runs if r["config"].get("device", "cpu").split(":")[0] == args.device]
    rows = [row for method in args.methods for row in compare(
        runs, configured_runs(args.setting, runs, args.split), method, args.against, args.metric,
        args.sizes.split(",") if args.sizes else None)]
    if not rows:
        print(f"no runs of {', '.join(args.methods)} in {_out(args)}{' or ' if args.also else ''}"
              f"{', '.join(args.also)} (with --sizes/--device as given)", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot", help="write the text corpora to a folder (read back with LIFELONG_CORPORA)")
    snap.add_argument("--dir", required=True)
    for name in ("run", "table", "choose", "figure", "merge", "compare"):
        q = sub.add_parser(name)
        q.add_argument("--setting", choices=list(SETTINGS), default="domains")
        q.add_argument("--split", choices=["test", "valid"], default="test")
        q.add_argument("--out", default=None)
        if name == "table":
            q.add_argument("--methods", default=None, help="only these methods (and their replay@ controls)")
            q.add_argument("--sizes", default=None, help="only these GPT presets, comma-separated")
            q.add_argument("--seeds", default=None, help="only these seeds, comma-separated")
            q.add_argument("--importance", action="store_true",
                           help="also the seconds after each task (EWC's Fisher) against its training seconds")
        if name == "choose":
            q.add_argument("--method", required=True)
            q.add_argument("--sizes", required=True)
        if name == "run":
            q.add_argument("--sizes", default=None, help="GPT presets, comma-separated (default: the setting's)")
            q.add_argument("--methods", default="naive,replay,ewc,ewc+replay,distill+replay")
            q.add_argument("--seeds", default="0")
            q.add_argument("--set", action="append", default=[], help="OPTION=V1,V2 (tuning grid)")
            q.add_argument("--equal-bytes", action="store_true")
            q.add_argument("--threads", type=int, default=1)
            q.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
            q.add_argument("--jobs", type=int, default=1, help="runs at a time, one process each")
            q.add_argument("--resume", action="store_true")
        if name == "figure":
            q.add_argument("--replace-from", action="append", default=[], metavar="FILE",
                           help="a result file whose runs replace those of the same configuration")
        if name == "merge":
            q.add_argument("files", nargs="+")
        if name == "compare":
            q.add_argument("methods", nargs="+", metavar="METHOD[:OPTION=VALUE...]")
            q.add_argument("--against", required=True,
                           help="METHOD[:OPTION=VALUE...], or equal-bytes: each run's own equal-bytes control")
            q.add_argument("--metric", default="average_accuracy", help="a run's metric (default: final accuracy)")
            q.add_argument("--sizes", default=None, help="only these GPT presets, comma-separated")
            q.add_argument("--device", default=None, choices=["cpu", "cuda"], help="only runs trained there")
            q.add_argument("--also", action="append", default=[], metavar="FILE", help="runs from this file too")
            q.add_argument("--json", action="store_true", help="the rows as JSON")
    args = p.parse_args()
    return {"run": cmd_run, "table": cmd_table, "choose": cmd_choose, "figure": cmd_figure, "merge": cmd_merge,
            "compare": cmd_compare, "snapshot": cmd_snapshot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
