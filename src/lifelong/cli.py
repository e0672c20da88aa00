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
from lifelong.data.streams import BENCHMARKS, StreamConfig, build_stream, check
from lifelong.strategies import STRATEGIES, strategy_options


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("run config files (docs: README, Command line)")
    c.add_argument("--config", metavar="FILE",
                   help="start from the run configuration in FILE (.toml or .json: the keys `--dry-run` prints; "
                   "or a result file to re-run) instead of the preset; flags typed on the command line override it")
    c.add_argument("--run-index", type=int, metavar="N",
                   help="with --config: the run to take from a file of several runs (compare, benchmarks), from 0")
    d = p.add_argument_group("data")
    d.add_argument("--benchmark", choices=BENCHMARKS, default="split-digits", help="default: %(default)s")
    d.add_argument("--data", metavar="SPEC", help="your own data instead of a benchmark, e.g. csv:tickets.csv,"
                   "text=body,label=intent,task=product (see docs/your-data.md)")
    d.add_argument("--classes-per-task", type=int, help="streams cut by classes: classes per task (default: C // 5)")
    d.add_argument("--scenario", choices=("task", "domain", "class"),
                   help="default: the benchmark's own (split: task, permuted/rotated: domain)")
    d.add_argument("--tasks", type=int, help="number of tasks (default: 5 for split, 10 for permuted/rotated)")
    d.add_argument("--class-order", choices=("fixed", "random"), default="fixed",
                   help="split streams: classes in order, or shuffled by the seed")
    d.add_argument("--data-dir", help="folder with the Fashion-MNIST .gz files (default: $LIFELONG_DATA, "
                   "else /usr/share/datasets/fashion-mnist); for clinc150 the CLINC150 folder (default: "
                   "$LIFELONG_CLINC150, else shared/datasets/clinc150 beside the repository)")
    d.add_argument("--encoder", choices=("frozen", "finetune", "lora"), default="frozen",
                   help="clinc150: a frozen MiniLM encoder (cached embeddings), or one fine-tuned fully or "
                   "through LoRA adapters")
    d.add_argument("--per-intent", type=int, help="clinc150: training queries kept per intent (a small slice)")
    d.add_argument("--environments", help="control: comma-separated gymnasium ids (default: CartPole-v1,"
                   "Acrobot-v1,LunarLander-v3 for task; LunarLander-v3 with changing gravity and wind for domain)")
    d.add_argument("--mode", choices=("bc", "rl"), default="bc",
                   help="control: behaviour cloning from experts, or reinforcement learning (see --agent)")
    d.add_argument("--agent", choices=("dqn", "ppo"), default="dqn",
                   help="control, rl: double DQN, or PPO (the continual-RL benchmark's agent; docs/control.md)")
    d.add_argument("--rl-steps", type=int, default=50_000, help="control, rl: environment steps per task")
    d.add_argument("--demos", type=int, default=20, help="control, bc: expert episodes per task (default: 20)")
    d.add_argument("--eval-episodes", type=int, default=20, help="control: episodes per evaluation (default: 20)")
    d.add_argument("--validation", type=float, default=0.0,
                   help="hold out this share of each task's training data (e.g. 0.1)")
    d.add_argument("--eval-split", choices=("test", "valid"), default="test",
                   help="evaluate on the test set, or on the held-out validation part to tune")
    t = p.add_argument_group("training (default: the benchmark's preset, the regime of its README table)")
    t.add_argument("--no-preset", action="store_true",
                   help="start from the library's plain defaults instead of the benchmark's preset")
    t.add_argument("--epochs", type=int, help="epochs per task (no preset: 1)")
    t.add_argument("--batch-size", type=int, help="(no preset: 128)")
    t.add_argument("--lr", type=float, help="learning rate (no preset: 1e-3 for Adam, 0.03 for SGD)")
    t.add_argument("--optimizer", choices=("auto", "adam", "sgd"),
                   help="auto: the optimizer the strategy is defined with (SGD for A-GEM), else Adam")
    t.add_argument("--momentum", type=float, help="sgd only (default: 0)")
    t.add_argument("--keep-optimizer", action="store_true", help="keep optimizer state across tasks")
    t.add_argument("--model", choices=("mlp", "cnn"), help="(no preset: mlp)")
    t.add_argument("--hidden", type=_ints, help="mlp: hidden widths, e.g. 400,400; cnn: width of its hidden fc "
                   "layer (no preset: 400,400)")
    t.add_argument("--dropout", type=float, help="(no preset: 0)")
    t.add_argument("--network", metavar="REF", help="your own network instead of --model: module:function (a "
                   "factory returning an nn.Module that maps inputs to feature vectors), torchvision:NAME, or "
                   "hf:FOLDER (a local Hugging Face model; text is tokenised by its own tokenizer)")
    t.add_argument("--network-option", action="append", default=[], metavar="KEY=VALUE",
                   help="module:function: a keyword argument for the factory (VALUE read as JSON; repeatable)")
    t.add_argument("--network-weights", metavar="FILE", help="torchvision: a local state dict to start from")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    t.add_argument("--device", default="cpu", help="where to train: auto (CUDA if present, else CPU), cpu, cuda, "
                   "cuda:N or mps (default: %(default)s)")
    t.add_argument("--autocast", choices=("none", "bf16"), default="none",
                   help="bf16: train in bfloat16 autocast (importance and the penalty stay fp32)")
    p.add_argument("--specialist", action="store_true",
                   help="also train one model per task alone and report retention against it")
    p.add_argument("--distributed", action="store_true",
                   help="train with DistributedDataParallel (start under torchrun; gloo on CPU, nccl on GPU)")
    p.add_argument("--fsdp", action="store_true", help="with --distributed: shard parameters and state (FSDP2)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration (preset, flags and --set applied) as JSON and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    o = p.add_argument_group("reports and training logs")
    o.add_argument("--report", metavar="DIR", help="also write an HTML report with its figures: DIR/index.html")
    o.add_argument("--log", action="append", choices=("csv", "tensorboard"), default=[],
                   help="log loss, penalty, step time and accuracy per task: csv (always available) or "
                   "tensorboard (needs the tensorboard package); repeatable")
    o.add_argument("--log-dir", default="runs", help="logs go to LOG_DIR/<strategy>-seed<seed>/ (default: runs)")


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("strategy options (each strategy has tuned defaults; see README)")
    s.add_argument("--lambda", dest="lambda", type=float, help="penalty strength (EWC, online EWC, SI, MAS)")
    s.add_argument("--gamma", type=float, help="online EWC: decay of earlier Fisher")
    s.add_argument("--xi", type=float, help="SI: damping")
    s.add_argument("--fisher", choices=("empirical", "true", "exact", "batched"), help="EWC: which Fisher")
    s.add_argument("--importance-samples", type=int,
                   help="EWC/MAS: sample budget for importance (default 1024; 0: the whole task)")
    s.add_argument("--importance-dtype", choices=("fp32", "bf16"), help="consolidation: precision storage")
    s.add_argument("--importance-keep", type=float,
                   help="consolidation: keep only this share of the largest importances (e.g. 0.01)")
    s.add_argument("--memory", type=int, help="replay: samples stored")
    s.add_argument("--selection", choices=("reservoir", "balanced", "herding"), help="replay: memory selection")
    s.add_argument("--replay-batch", type=int, help="replay: stored samples per step")
    s.add_argument("--alpha", type=float, help="DER/DER++: weight of the logit match")
    s.add_argument("--beta", type=float, help="DER++: weight of the memory's label loss")
    s.add_argument("--distill", type=float, help="LwF/iCaRL: weight of the distillation term")
    s.add_argument("--temperature", type=float, help="LwF/iCaRL: distillation temperature")
    s.add_argument("--bias-correction", choices=("none", "wa", "bic"), default="none",
                   help="replay methods: correct the output layer's bias toward new classes (WA or BiC)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifelong", description="Continual learning without forgetting.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_p = sub.add_parser("run", help="learn one task stream with one strategy",
                           description="Learn a task stream task by task and print the accuracy matrix.")
    run_p.add_argument("--strategy", default="naive", help=f"one of {', '.join(STRATEGIES)} (default: naive)")
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--out", help="write the result JSON here")
    run_p.add_argument("--checkpoint-dir", help="save the run's progress here after each task")
    run_p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (same options)")
    run_p.add_argument("--save", metavar="DIR", help="save the trained model in DIR (what `lifelong serve` serves)")
    run_p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                       help="any option of the strategy, e.g. reference_batch=128 (repeatable)")
    _add_common(run_p)
    _add_strategy_flags(run_p)
    cmp_p = sub.add_parser("compare", help="several strategies and seeds, a Markdown table",
                           description="Run each strategy with each seed; print mean ± std per strategy.")
    cmp_p.add_argument("--strategies", default="naive,ewc", help="comma-separated (default: %(default)s)")
    cmp_p.add_argument("--seeds", type=_ints, default=(0,), help="comma-separated (default: 0)")
    cmp_p.add_argument("--set", action="append", default=[], metavar="STRATEGY.OPTION=VALUE",
                       help="an option for one strategy, e.g. ewc.strength=300 (repeatable)")
    cmp_p.add_argument("--out", help="write all runs and the summary as JSON here")
    _add_common(cmp_p)
    _add_strategy_flags(cmp_p)
    rep_p = sub.add_parser("report", help="an HTML report with figures from result files",
                           description="Write DIR/index.html and its PNG figures from result JSON files.")
    rep_p.add_argument("results", nargs="+", metavar="RESULT.json",
                       help="files written by `run --out`, `compare --out` or a benchmark script")
    rep_p.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the figures")
    rep_p.add_argument("--title", help="the page title (default: the strategies' names)")
    from lifelong.service.cli import add_commands as add_service_commands

    add_service_commands(sub)  # serve, keys, worker
    from lifelong.data.cli import add_commands as add_data_commands

    add_data_commands(sub)  # data fetch, list, show
    return parser


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
