"""The `lifelong` command: arguments -> config dataclasses -> library calls. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from lifelong.cli_args import (
    UsageError,
    check_network_flags,
    configs_from_file,
    flag_options,
    parse_sets,
    preset_of,
    run_config,
    text_encoder,
    typed_options,
    with_bias_correction,
)
from lifelong.cli_parser import build_parser
from lifelong.data.streams import StreamConfig, build_stream, check
from lifelong.strategies import strategy_options


def _announce(args: argparse.Namespace, strategies: list[str]) -> None:
    """Say on stderr which preset the run starts from (or that it uses the library defaults)."""
    if args.quiet:
        return
    if args.config:
        for name in strategies:
            print(f"lifelong: {name}: the configuration in {args.config} and the flags given", file=sys.stderr)
        return
    preset = preset_of(args)
    for name in strategies:
        if preset is None:
            why = ("--no-preset" if args.no_preset else "your own data" if args.data
                   else "no README table sets a regime for this benchmark")
            print(f"lifelong: {name}: library defaults ({why}) and the flags given", file=sys.stderr)
        else:
            print(f"lifelong: {name}: {preset.describe(name)}", file=sys.stderr)


def _reporting_rank() -> bool:
    """Under --distributed only rank 0 writes logs and reports (the ranks hold the same model)."""
    from lifelong import distributed

    return not distributed.active() or distributed.is_main()


def _training_log(args: argparse.Namespace, strategy: str, seed: int) -> AbstractContextManager[Any]:
    """The --log logs of one run, in LOG_DIR/<strategy>-seed<seed>/ (yields None when none was asked for)."""
    if not args.log or not _reporting_rank():
        return nullcontext()
    from lifelong.logs import open_log, run_folder

    folder = run_folder(args.log_dir, strategy, seed)
    print(f"logging {'+'.join(args.log)} to {folder}", file=sys.stderr)
    return open_log(args.log, folder)


def _write_report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from lifelong.reporting.report import write_report

    if _reporting_rank():
        index = write_report(results, args.report)
        print(f"report written to {index}", file=sys.stderr if args.json else sys.stdout)


def _command_report(args: argparse.Namespace) -> int:
    from lifelong.reporting.report import load_results, write_report

    try:
        results = load_results(args.results)
    except ValueError as exc:
        print(f"lifelong: error: {exc}", file=sys.stderr)
        return 1
    index = write_report(results, args.out, args.title)
    print(f"report of {len(results)} run(s) written to {index}")
    return 0


def _command_run(args: argparse.Namespace, progress: bool) -> int:
    from lifelong.reporting import format_run, write_json
    from lifelong.run import run

    if args.config:
        config = args.configs[0]
    else:
        name = with_bias_correction(args.strategy, args)
        sets = parse_sets([f"{name}.{item}" if "=" in item and "." not in item.partition("=")[0] else item
                            for item in args.set], [name])
        config = run_config(args, name, args.seed, flag_options(name, args, sets))
    name = config.strategy
    if args.save and (config.stream.benchmark == "control"
                      or (config.stream.encoder != "frozen" and not config.stream.encoder.startswith("hf:"))):
        raise UsageError("--save supports array benchmarks and clinc150 with the frozen encoder")
    if args.dry_run:
        from lifelong.run import seeded

        print(json.dumps(seeded(config).to_dict(), indent=None if args.json else 1))
        return 0
    _announce(args, [name])
    with _training_log(args, name, config.seed) as log:
        done = run(config, progress, checkpoint_dir=args.resume or args.checkpoint_dir, resume=bool(args.resume),
                   log=log)
    result = done.record
    _say_fallbacks(args, result)
    if args.save and _reporting_rank():  # under --distributed the ranks hold the same model: one saves it
        from lifelong.checkpoint import save_result

        save_result(args.save, done, overwrite=True)
        print(f"model saved to {args.save}", file=sys.stderr)
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, default=list))
    else:
        print(format_run(result))
        if args.out:
            print(f"\nresult written to {args.out}")
    if args.report:
        _write_report([result], args)
    return 0


def _say_fallbacks(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Name, on stderr, the layers the fast importance estimate had no closed form for."""
    found = result.get("importance_fallbacks") or {}
    whole = found.get("whole_model_batches") or {}
    if args.quiet or not (whole or (args.network and found.get("generic_layers"))):
        return
    layers = found.get("generic_layers") or []
    if layers:
        print(f"lifelong: importance: {len(layers)} layer(s) without a closed-form rule take the module-local vmap "
              f"(slower, still exact): {', '.join(layers[:8])}{' ...' if len(layers) > 8 else ''}", file=sys.stderr)
    if whole:
        print("lifelong: importance: the per-module rules could not take this network (a module run twice, "
              "returning a tuple, or broadcast over the batch): whole-model fallback on "
              + ", ".join(f"{n} batch(es) by {way}" for way, n in whole.items()), file=sys.stderr)


def _command_compare(args: argparse.Namespace, progress: bool) -> int:
    from lifelong.reporting import aggregate, environment, format_compare, write_json
    from lifelong.run import run

    if args.config:
        configs = args.configs
    else:
        strategies = [with_bias_correction(s.strip(), args) for s in args.strategies.split(",") if s.strip()]
        sets = parse_sets(args.set, strategies)
        configs = [run_config(args, s, seed, flag_options(s, args, sets))
                   for s in strategies for seed in args.seeds]
    strategies = list(dict.fromkeys(c.strategy for c in configs))
    if args.dry_run:
        from lifelong.run import seeded

        print(json.dumps([seeded(c).to_dict() for c in configs], indent=None if args.json else 1))
        return 0
    _announce(args, strategies)
    results = []
    for cfg in configs:
        if progress:
            print(f"running {cfg.strategy}, seed {cfg.seed}", file=sys.stderr)
        with _training_log(args, cfg.strategy, cfg.seed) as log:
            results.append(run(cfg, progress, log=log).record)
    rows = aggregate(results)
    table = format_compare(rows)
    summary = {"summary": rows, "table": table, "runs": results, "environment": environment()}
    if args.out:
        write_json(args.out, summary)
    if args.json:
        print(json.dumps(summary, default=list))
    else:
        first = results[0]
        print(f"{first['benchmark']}, {first['scenario']}-incremental, {len(first['tasks'])} tasks, "
              f"{first['eval_split']} split, seeds {','.join(map(str, sorted({c.seed for c in configs})))}\n")
        print(table)
        if args.out:
            print(f"\nresults written to {args.out}")
    if args.report:
        _write_report(results, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        return _command_report(args)
    if args.command == "data":
        from lifelong.data.cli import dispatch as data_dispatch

        return data_dispatch(args, parser)
    from lifelong.service.cli import COMMANDS as SERVICE_COMMANDS

    if args.command in SERVICE_COMMANDS:  # serve, keys, worker
        from lifelong.service.cli import dispatch

        return dispatch(args, parser)
    if (getattr(args, "network", None) or "").startswith("hf:"):  # saved models name the folder from anywhere
        args.network = "hf:" + str(Path(args.network[3:]).expanduser().resolve())
    try:
        if args.config:  # the file's runs, flags applied, each checked before anything runs
            from lifelong.strategies import build_strategy

            typed = typed_options(build_parser(), sys.argv[1:] if argv is None else argv)
            args.configs = configs_from_file(args, typed)
            for config in args.configs:
                try:
                    build_strategy(config.strategy, config.strategy_options)
                except ValueError as exc:
                    raise UsageError(f"{args.config}: {exc}") from None
            streams = list({json.dumps(c.stream.to_dict()): c.stream for c in args.configs}.values())
        else:
            if args.run_index is not None:
                raise UsageError("--run-index picks a run of a --config file")
            for name in [args.strategy] if args.command == "run" else args.strategies.split(","):
                strategy_options(name.strip())
            streams = [StreamConfig(args.benchmark, args.scenario, args.tasks, validation=args.validation or (
                0.1 if args.eval_split == "valid" else 0.0), class_order=args.class_order, encoder=text_encoder(args),
                data=args.data, classes_per_task=args.classes_per_task)]
        check_network_flags(args)
        for stream in streams:
            check(stream)
            if stream.data:  # read and check the data now: a bad file is a usage error, nothing is written yet
                build_stream(stream)
        from lifelong.logs import check_kinds

        check_kinds(args.log)  # before a long run, not after it
        from lifelong.devices import resolve_device

        resolve_device(args.device)  # a device this machine lacks is a usage error, before anything runs
    except (ValueError, UsageError) as exc:
        parser.error(str(exc))
    if args.distributed:
        from lifelong import distributed

        if "RANK" not in os.environ:
            parser.error("--distributed runs under torchrun: torchrun --nproc_per_node N -m lifelong run ...")
        distributed.init_from_env(args.device)
        if not distributed.is_main():  # one rank reports; the others train silently
            args.json, args.quiet, args.out = False, True, None
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    progress = not (args.json or args.quiet) and sys.stderr.isatty()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from lifelong.data.vision import DataError
    from lifelong.learner import TrainingDiverged
    from lifelong.resume import ResumeError

    try:
        return _command_run(args, progress) if args.command == "run" else _command_compare(args, progress)
    except UsageError as exc:
        parser.error(str(exc))
    except (DataError, TrainingDiverged, ResumeError, ValueError) as exc:
        print(f"lifelong: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
