"""Language models that keep learning: continual GPT runs, resumable, every run saved as it ends.

    python benchmarks/lm.py run --setting domains --sizes gpt-0.2m,gpt-1m --methods naive,ewc --seeds 0,1,2
    python benchmarks/lm.py run --setting domains --split valid --methods ewc --set ewc.strength=10,100
    python benchmarks/lm.py choose --setting domains --method ewc --sizes gpt-0.2m,gpt-1m
    python benchmarks/lm.py table --setting domains [--importance]
    python benchmarks/lm.py compare --against equal-bytes ewc distill+replay   # per seed, minus the control
    python benchmarks/lm.py snapshot --dir corpora/      # the text, for a machine without it (LIFELONG_CORPORA)
    python benchmarks/lm.py merge --setting domains part-*.json   # runs from elsewhere (a GPU host) into the file
    python benchmarks/lm.py merge --setting domains --split valid part-*.json   # validation runs: name the split

Settings (SETTINGS in lm_methods.py): `probe` is the issue's probe (no pre-training, 4 domains of 300 steps of
32 x 128 bytes); `domains` pre-trains on the general mixture first, then learns the 4 domains;
`facts` pre-trains the same way, then learns 10 batches of new facts (`facts-long`: twice the steps;
`facts-wide`: twice the facts a batch, validated on fact batches of its own in the test's question
forms, where the other facts settings validate on the test's facts in a third form). A method is a strategy name
with options (METHODS, lm_methods.py); `replay=` in a method's options is the replay budget as a share of the text
the run trains on, turned into tokens by `_options`. `--equal-bytes` adds, for each method that stores more
than the plain replay, a token-replay run given that method's stored bytes (capped at the budget that keeps
every window the run trains on: past it every budget is one run, shared by every method storing more).

Runs go to results/lm-<setting>[-valid].json (`--out`), one entry per (size, method, options, seed):
a run already there with the same configuration is not run again (`--resume`; it says so on stderr where that run
started from other pre-trained weights than this machine's cached ones, which `compare` would not pair with runs
trained here: those go to another `--out`). Processes may share a
file (each run is added under a lock); `--jobs N` runs N at a time, one process each (a GPU). `--set`
values are tried one run each (tuning on `--split valid`); `table` prints the Markdown tables from the file.

This file runs; what a run is (its configuration and key) is lm_plan.py, and the commands that read saved
runs and train nothing (`table`, `figure`, `compare`, `choose`) are lm_results.py.
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
from pathlib import Path
from typing import Any

import torch
from lm_jobs import load, merge_runs, run_key, run_processes, save_run
from lm_methods import METHODS, NO_EQUAL_BYTES, SETTINGS, _options
from lm_plan import equal_bytes_control, parse_sets, planned_key, result_path, run_config, same_run_key
from lm_results import cmd_choose, cmd_compare, cmd_figure, cmd_table

from lifelong.data.corpora import SNAPSHOT_ENV, save_snapshot
from lifelong.lm.run import LMRunConfig, cached_start, pretrain_cache_path, run_lm
from lifelong.reporting import environment, write_json
from lifelong.reporting.text import cpuinfo


def _combinations(args: argparse.Namespace) -> list[tuple[str, int, str, dict[str, Any]]]:
    sizes = args.sizes.split(",") if args.sizes else SETTINGS[args.setting]["sizes"]
    combos = list(itertools.product(sizes, [int(s) for s in args.seeds.split(",")], args.methods.split(","),
                                    parse_sets(args.set)))
    unknown = sorted({m for _, _, m, _ in combos} - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return combos


def _equal_bytes_options(args: argparse.Namespace, size: str, seed: int, strategy: str, options: dict[str, Any],
                         runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The token-replay control's options for the run of `strategy` with `options` (None until it has run):
    a budget of its stored bytes (at most what keeps all the text), in the same model (LoRA rank, lr)."""
    key = planned_key(args, size, strategy, options, seed)
    ref = next((r for r in runs if run_key(r) == key), None)
    if ref is None:
        return None
    return {"tokens": equal_bytes_control(ref)["options"]["tokens"],
            **{k: options[k] for k in ("lora", "lr") if k in options}}


_STARTS: dict[Path, str | None] = {}  # cache file -> the fingerprint of its weights (loaded once a command)


def _other_start(config: LMRunConfig, runs: list[dict[str, Any]]) -> str | None:
    """A line for a run `--resume` skips where the saved one started from other pre-trained weights than a run
    here would (this machine's cached model), or may have (weights not recorded, trained only on another device):
    `compare` pairs runs from one start only, so a run trained here would have no partner in the file."""
    key = same_run_key({"config": config.to_dict()})
    saved = [r for r in runs if same_run_key(r) == key]
    path = pretrain_cache_path(config)
    if not saved or path is None:
        return None
    if path not in _STARTS:
        _STARTS[path] = cached_start(config)
    mine = _STARTS[path]
    weights = {r.get("pretrain", {}).get("weights") for r in saved}
    if mine is not None and mine in weights:
        return None
    unknown = [r for r in saved if r.get("pretrain", {}).get("weights") is None]
    devices = {r["config"].get("device", "cpu") for r in unknown}
    # an unrecorded run from this device may be this start (`compare` finds it by its scores before the domains)
    unrecorded = [] if config.device in devices else sorted(devices)
    other = sorted(weights - {None, mine}) if mine is not None else []
    if not other and not unrecorded:
        return None
    why = (f"done from other pre-trained weights ({', '.join(other)}) than this machine's ({mine})" if other else
           f"done on {', '.join(unrecorded)} before runs recorded their pre-trained weights: it may not share "
           "this machine's start")
    return (f"{config.model} {config.strategy} {config.options} seed {config.seed}: skipped, {why}; `compare` "
            "pairs runs from one start, so runs to pair with this machine's go to another --out (on a CPU that is "
            "not Intel's, scripts/mkl-intel-path.sh makes MKL sum as the committed runs did)")


def cpu_vendor() -> str | None:
    """The CPU's vendor as Linux names it (`GenuineIntel`, `AuthenticAMD`), None where it is not known."""
    return cpuinfo("vendor_id")


def _vendor_note(runs: list[dict[str, Any]], device: str) -> str | None:
    """A line where saved CPU runs ran on Intel CPUs and this CPU's MKL would take another vendor's kernels:
    pre-training here then ends at other weights, and `compare` pairs runs only from one start."""
    vendor = cpu_vendor()
    if device != "cpu" or vendor in (None, "GenuineIntel") or "mkl-intel-path" in os.environ.get("LD_PRELOAD", ""):
        return None
    intel = [r for r in runs if r["config"].get("device", "cpu") == "cpu"
             and "Intel" in r.get("environment", {}).get("cpu", "")]
    if not intel:
        return None
    return (f"note: this CPU is {vendor}'s and {len(intel)} runs in the file ran on Intel CPUs: MKL takes other "
            "kernels here, so a model pre-trained here has other weights and runs from it do not pair with "
            "theirs; run under scripts/mkl-intel-path.sh to reproduce them")


def cmd_run(args: argparse.Namespace) -> int:
    if note := _vendor_note(load(result_path(args))["runs"], args.device):
        print(note, file=sys.stderr, flush=True)
    if args.jobs > 1:
        return run_parallel(args)
    torch.set_num_threads(args.threads)
    out = result_path(args)
    saved = load(out)
    done = {same_run_key(r) for r in saved["runs"]}
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
            config = run_config(args, size, strat, opts, seed)
            probe = {"config": config.to_dict()}
            # re-read where it is not known done: another process sharing the file may have run it since
            key = same_run_key(probe)
            on_disk = load(out)["runs"] if args.resume and key not in done else saved["runs"]
            if args.resume and (key in done or key in {same_run_key(r) for r in on_disk}):
                if note := _other_start(config, on_disk):
                    print(note, file=sys.stderr, flush=True)
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {args.setting} {size} {label} {opts} seed {seed}", flush=True)
            result = run_lm(config, log=lambda m: print("   ", m, flush=True))
            result.update({"method": label, "setting": args.setting, "environment": environment()})
            saved["runs"] = [r for r in saved["runs"] if run_key(r) != run_key(result)] + [result]
            done.add(same_run_key(result))
            save_run(out, result)
            m = result["metrics"]
            print(f"    final {m['average_accuracy']:.3f} learning {m['learning_accuracy']:.3f} retention "
                  f"{m['average_retention']:.3f} general loss x{m['general_loss_ratio']:.3f} "
                  f"bytes {result['stored_bytes']:,} {result['seconds']:.0f} s", flush=True)
    return 0


def _missing(args: argparse.Namespace, size: str, seed: int, method: str, strategy: str, options: dict[str, Any],
             runs: list[dict[str, Any]]) -> bool:
    """Whether the run of `method`, or (under --equal-bytes) its control once the run is there, is not in `runs`."""
    done = {same_run_key(r) for r in runs}
    if same_run_key({"config": run_config(args, size, strategy, options, seed).to_dict()}) not in done:
        return True
    if not args.equal_bytes or method in NO_EQUAL_BYTES:
        return False
    control = _equal_bytes_options(args, size, seed, strategy, options, runs) or {}
    return same_run_key({"config": run_config(args, size, "token-replay", control, seed).to_dict()}) not in done


def _still_missing(resume: bool, missing: Callable[[list[dict[str, Any]]], bool], out: Path) -> bool:
    return not resume or missing(load(out)["runs"])


def run_parallel(args: argparse.Namespace) -> int:
    """`run --jobs N`: every (size, seed, method, options) as its own process, N at a time (small GPTs
    leave a GPU mostly idle, one process each fills it), each writing a part file beside the output
    (`<out>.parts/`); the parts are merged into the output as they finish."""
    out = result_path(args)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    saved = load(out)
    queue: list[tuple[str, list[str], Callable[[], bool]]] = []
    for size, seed, method, extra in _combinations(args):
        strategy, options = _options(args.setting, size, method, extra)
        mine = [r for r in saved["runs"] if r["config"]["model"] == size and r["config"]["seed"] == seed
                and (r["method"] == method or r["config"]["strategy"] == "token-replay")]  # and any control
        missing = functools.partial(_missing, args, size, seed, method, strategy, options)
        if args.resume and not missing(saved["runs"]):
            if note := _other_start(run_config(args, size, strategy, options, seed), saved["runs"]):
                print(note, file=sys.stderr, flush=True)
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
        queue.append((name, command, functools.partial(_still_missing, args.resume, missing, out)))
    return run_processes(queue, args.jobs, parts, out, args.setting, args.split)


def cmd_snapshot(args: argparse.Namespace) -> int:
    for path in save_snapshot(args.dir, max_bytes=SETTINGS["domains"]["data"].max_bytes):
        print(f"{path} {path.stat().st_size:,} bytes")
    print(f"read them with {SNAPSHOT_ENV}={args.dir}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Runs of other result files (one per parallel process, or from another machine) into the setting's
    file; a run already there with the same configuration is kept, not replaced."""
    out = result_path(args)
    added, other = merge_runs(out, args.setting, args.split, [Path(f) for f in args.files])
    print(f"{added} run(s) added to {out} ({len(load(out)['runs'])} in all)")
    if other:
        held = ", ".join(f"{n} of {kind}" for kind, n in sorted(other.items()))
        print(f"left out, not {args.setting}/{args.split}: {held} (pass --setting and --split to merge them)",
              file=sys.stderr)
        return 0 if added else 1
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
