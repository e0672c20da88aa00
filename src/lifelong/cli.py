"""The `lifelong` command: arguments -> config dataclasses -> library calls. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from lifelong.data.streams import BENCHMARKS, StreamConfig, build_stream, check
from lifelong.learner import LearnerConfig
from lifelong.strategies import STRATEGIES, strategy_options

# CLI flag -> strategy option it sets (only when given; each strategy keeps its tuned default otherwise)
STRATEGY_FLAGS = {"lambda": "strength", "gamma": "gamma", "xi": "xi", "fisher": "fisher",
                  "importance_samples": "samples", "memory": "memory", "selection": "selection",
                  "replay_batch": "replay_batch", "importance_dtype": "storage", "importance_keep": "keep",
                  "alpha": "alpha", "beta": "beta", "distill": "distill", "temperature": "temperature"}

# CLI flag -> (part of RunConfig, or "" for the RunConfig itself; its field): what a flag typed on the
# command line changes in a --config file's run
FILE_FLAGS = {**{f: ("stream", f) for f in ("benchmark", "data", "classes_per_task", "scenario", "tasks",
                                           "class_order", "data_dir", "encoder", "per_intent", "environments",
                                           "demos", "eval_episodes", "validation")},
              **{f: ("learner", f) for f in ("epochs", "batch_size", "lr", "optimizer", "momentum", "device",
                                            "autocast")},
              "model": ("model", "kind"), "hidden": ("model", "hidden"), "dropout": ("model", "dropout"),
              "network": ("model", "network"), "network_weights": ("model", "network_weights"),
              **{f: ("", f) for f in ("strategy", "seed", "eval_split", "specialist", "rl_steps", "agent")}}


class UsageError(Exception):
    """Arguments that parse but do not make sense together; exit code 2."""


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


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _strategy_options(name: str, args: argparse.Namespace, sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Options for one strategy: the flags it accepts (an error if given one it has no use for in
    `run`; skipped in `compare`, where a flag may be meant for another strategy), then --set."""
    accepted = {k for fields in strategy_options(name).values() for k in fields}
    opts: dict[str, Any] = {}
    for flag, key in STRATEGY_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "importance_samples" and value == 0:
            value = None  # the whole task
        if key in accepted:
            opts[key] = value
        elif args.command == "run":
            raise UsageError(f"strategy {name!r} has no use for --{flag.replace('_', '-')}")
    opts.update(sets.get(name, {}))
    return opts


def _preset(args: argparse.Namespace) -> Any:
    """The benchmark's preset (the regime of its README table), or None (--no-preset, or none exists)."""
    if args.no_preset or args.data:  # a user's own data has no README table
        return None
    from lifelong.presets import preset_for

    return preset_for(args.benchmark, args.scenario, encoder=args.encoder, environments=args.environments)


def _given(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    """{config field: flag value} for the flags given on the command line."""
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}


def _run_config(args: argparse.Namespace, strategy: str, seed: int, options: dict[str, Any]):
    """Library defaults, then the benchmark's preset, then the flags given, then --set."""
    from lifelong.models import ModelConfig
    from lifelong.run import RunConfig

    preset = _preset(args)
    tasks = args.tasks if args.tasks is not None else preset.stream.tasks if preset else None
    per_intent = args.per_intent if args.per_intent is not None else preset.stream.per_intent if preset else None
    scenario = args.scenario or (preset.stream.scenario if preset else None)
    stream = StreamConfig(args.benchmark, scenario, tasks, seed, args.validation, args.class_order,
                          args.data_dir, _encoder(args), per_intent, args.environments, args.demos, args.eval_episodes,
                          args.data, args.classes_per_task)
    if args.eval_split == "valid" and args.validation <= 0:
        stream = replace(stream, validation=0.1)
    learner = preset.learner_for(strategy) if preset else LearnerConfig()
    learner = learner.replace(**_given(args, {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                                             "optimizer": "optimizer", "momentum": "momentum"}),
                              reset_optimizer=not args.keep_optimizer, seed=seed, device=args.device,
                              autocast=args.autocast,
                              sharding="fsdp" if args.fsdp else "ddp")
    model = (preset.model if preset else ModelConfig()).replace(
        **_given(args, {"model": "kind", "hidden": "hidden", "dropout": "dropout"}))
    if args.network:
        model = model.replace(network=args.network, network_options=_network_options(args),
                              network_weights=args.network_weights or "")
    if args.mode == "rl":
        stream = replace(stream, demos=0)
    options = {**(preset.strategy_options(strategy) if preset else {}), **options}
    return RunConfig(stream, strategy, options, learner, model, seed, args.eval_split, args.specialist,
                     "rl" if args.mode == "rl" else "supervised", args.rl_steps, args.agent)


def _encoder(args: argparse.Namespace) -> str:
    """The text encoder: --encoder, or for --network hf:FOLDER that folder's own tokenizer."""
    return args.network if args.network and args.network.startswith("hf:") else args.encoder


def _network_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {}
    for item in args.network_option:
        key, sep, value = item.partition("=")
        if not (sep and key.isidentifier()):
            raise UsageError(f"--network-option takes KEY=VALUE, got {item!r}")
        options[key] = _parse_value(value)
    return options


def _check_network(args: argparse.Namespace) -> None:
    """A bad --network is a usage error, told before anything runs or is written."""
    if not args.network:
        if args.network_option or args.network_weights:
            raise UsageError("--network-option and --network-weights need --network")
        return
    from lifelong.models.backbone import check_network

    if args.network.startswith("hf:") and args.encoder != "frozen":
        raise UsageError("--network hf:FOLDER tokenises text with that folder's tokenizer: leave out --encoder")
    if args.model or args.hidden:
        raise UsageError("--network replaces --model and --hidden: give one or the other")
    check_network(args.network, _network_options(args), args.network_weights or "")


def _typed(argv: list[str]) -> set[str]:
    """The options typed on the command line (argparse fills in the others with their defaults)."""
    parser = build_parser()
    parsers = [parser]
    while parsers:
        for action in parsers.pop()._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return set(vars(parser.parse_args(argv)))


def _file_config(args: argparse.Namespace, typed: set[str], base: Any, sets: dict[str, dict[str, Any]] | None = None,
                 strategy: str | None = None, seed: int | None = None) -> Any:
    """A --config file's run with the flags typed on the command line applied, then --set (`sets`:
    compare's, parsed for all its strategies; None: run's, parsed here for the run's strategy)."""
    from lifelong.run import RunConfig

    values = base.to_dict()
    for flag in typed & set(FILE_FLAGS):
        part, key = FILE_FLAGS[flag]
        (values[part] if part else values)[key] = getattr(args, flag)
    if "network_option" in typed:
        values["model"]["network_options"] = _network_options(args)
    if "network" in typed and args.network.startswith("hf:"):
        values["stream"]["encoder"] = args.network  # that folder's own tokenizer
    if "keep_optimizer" in typed:
        values["learner"]["reset_optimizer"] = False
    if "fsdp" in typed:
        values["learner"]["sharding"] = "fsdp"
    if "mode" in typed:
        values["mode"] = "rl" if args.mode == "rl" else "supervised"
        values["stream"]["demos"] = 0 if args.mode == "rl" else values["stream"]["demos"]
    if "eval_split" in typed and args.eval_split == "valid" and values["stream"]["validation"] <= 0:
        values["stream"]["validation"] = 0.1
    values["strategy"] = strategy or values["strategy"]
    values["seed"] = values["seed"] if seed is None else seed
    if "bias_correction" in typed and args.bias_correction != "none" \
            and not values["strategy"].endswith(f"+{args.bias_correction}"):
        values["strategy"] += f"+{args.bias_correction}"
    name = values["strategy"]
    if name != base.strategy:  # another strategy keeps only the file's options it has a use for
        accepted = {k for fields in strategy_options(name).values() for k in fields}
        values["strategy_options"] = {k: v for k, v in values["strategy_options"].items() if k in accepted}
    sets = _parse_sets([f"{name}.{item}" if "=" in item and "." not in item.partition("=")[0] else item
                        for item in args.set], [name]) if sets is None else sets
    values["strategy_options"].update(_strategy_options(name, args, sets))
    return RunConfig.from_dict(values)


def _configs_from_file(args: argparse.Namespace, typed: set[str]) -> list[Any]:
    """The runs of `--config FILE`, flags applied: `run` takes one; `compare` every run of the file, or
    one run (the file's only one, or --run-index) times the --strategies and --seeds typed."""
    from lifelong.runfile import load_run_config, load_run_configs

    if args.command == "run" or typed & {"strategies", "seeds", "run_index"}:
        if args.run_index is None and args.command == "compare" and len(load_run_configs(args.config)) > 1:
            raise UsageError(f"--strategies and --seeds with --config take a file of one run; "
                             f"{args.config} holds several: choose one with --run-index N")
        bases = [load_run_config(args.config, args.run_index)]
    else:
        bases = load_run_configs(args.config)
    if args.command == "run":
        return [_file_config(args, typed, bases[0])]
    base = bases[0]
    strategies = ([_with_bias_correction(s.strip(), args) for s in args.strategies.split(",") if s.strip()]
                  if "strategies" in typed else [base.strategy])
    seeds = args.seeds if "seeds" in typed else [base.seed]
    sets = _parse_sets(args.set, strategies if len(bases) == 1 else sorted({b.strategy for b in bases}))
    if len(bases) > 1:
        return [_file_config(args, typed, b, sets) for b in bases]
    return [_file_config(args, typed, base, sets, s, seed) for s in strategies for seed in seeds]


def _announce(args: argparse.Namespace, strategies: list[str]) -> None:
    """Say on stderr which preset the run starts from (or that it uses the library defaults)."""
    if args.quiet:
        return
    if args.config:
        for name in strategies:
            print(f"lifelong: {name}: the configuration in {args.config} and the flags given", file=sys.stderr)
        return
    preset = _preset(args)
    for name in strategies:
        if preset is None:
            why = ("--no-preset" if args.no_preset else "your own data" if args.data
                   else "no README table sets a regime for this benchmark")
            print(f"lifelong: {name}: library defaults ({why}) and the flags given", file=sys.stderr)
        else:
            print(f"lifelong: {name}: {preset.describe(name)}", file=sys.stderr)


def _parse_sets(items: list[str], strategies: list[str]) -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not (sep and dot and name and key):
            raise UsageError(f"--set takes STRATEGY.OPTION=VALUE, got {item!r}")
        if name not in strategies:
            raise UsageError(f"--set {item!r}: {name!r} is not among --strategies")
        known = {k for fields in strategy_options(name).values() for k in fields}
        if key not in known:
            raise UsageError(f"--set {item!r}: {name} has no option {key!r}; it has {', '.join(sorted(known))}")
        sets.setdefault(name, {})[key] = _parse_value(value)
    return sets


def _with_bias_correction(name: str, args: argparse.Namespace) -> str:
    return name if args.bias_correction == "none" else f"{name}+{args.bias_correction}"


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
        name = _with_bias_correction(args.strategy, args)
        sets = _parse_sets([f"{name}.{item}" if "=" in item and "." not in item.partition("=")[0] else item
                            for item in args.set], [name])
        config = _run_config(args, name, args.seed, _strategy_options(name, args, sets))
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
        strategies = [_with_bias_correction(s.strip(), args) for s in args.strategies.split(",") if s.strip()]
        sets = _parse_sets(args.set, strategies)
        configs = [_run_config(args, s, seed, _strategy_options(s, args, sets))
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

            args.configs = _configs_from_file(args, _typed(sys.argv[1:] if argv is None else argv))
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
                0.1 if args.eval_split == "valid" else 0.0), class_order=args.class_order, encoder=_encoder(args),
                data=args.data, classes_per_task=args.classes_per_task)]
        _check_network(args)
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
