"""From parsed `lifelong` arguments to run configs: the library's defaults, then the benchmark's preset,
then the flags typed, then `--set`; or a `--config` file's runs with the typed flags applied."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from lifelong.data.streams import StreamConfig
from lifelong.learner import LearnerConfig
from lifelong.strategies import option_names

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


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def flag_options(name: str, args: argparse.Namespace, sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Options for one strategy: the flags it accepts (an error if given one it has no use for in
    `run`; skipped in `compare`, where a flag may be meant for another strategy), then --set."""
    accepted = option_names(name)
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


def preset_of(args: argparse.Namespace) -> Any:
    """The benchmark's preset (the regime of its README table), or None (--no-preset, or none exists)."""
    if args.no_preset or args.data:  # a user's own data has no README table
        return None
    from lifelong.presets import preset_for

    return preset_for(args.benchmark, args.scenario, encoder=args.encoder, environments=args.environments)


def _given(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    """{config field: flag value} for the flags given on the command line."""
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}


def run_config(args: argparse.Namespace, strategy: str, seed: int, options: dict[str, Any]):
    """Library defaults, then the benchmark's preset, then the flags given, then --set."""
    from lifelong.models import ModelConfig
    from lifelong.run import RunConfig

    preset = preset_of(args)
    tasks = args.tasks if args.tasks is not None else preset.stream.tasks if preset else None
    per_intent = args.per_intent if args.per_intent is not None else preset.stream.per_intent if preset else None
    scenario = args.scenario or (preset.stream.scenario if preset else None)
    stream = StreamConfig(args.benchmark, scenario, tasks, seed, args.validation, args.class_order,
                          args.data_dir, text_encoder(args), per_intent, args.environments, args.demos,
                          args.eval_episodes, args.data, args.classes_per_task)
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
        model = model.replace(network=args.network, network_options=network_options(args),
                              network_weights=args.network_weights or "")
    if args.mode == "rl":
        stream = replace(stream, demos=0)
    options = {**(preset.strategy_options(strategy) if preset else {}), **options}
    return RunConfig(stream, strategy, options, learner, model, seed, args.eval_split, args.specialist,
                     "rl" if args.mode == "rl" else "supervised", args.rl_steps, args.agent)


def text_encoder(args: argparse.Namespace) -> str:
    """The text encoder: --encoder, or for --network hf:FOLDER that folder's own tokenizer."""
    return args.network if args.network and args.network.startswith("hf:") else args.encoder


def network_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {}
    for item in args.network_option:
        key, sep, value = item.partition("=")
        if not (sep and key.isidentifier()):
            raise UsageError(f"--network-option takes KEY=VALUE, got {item!r}")
        options[key] = parse_value(value)
    return options


def check_network_flags(args: argparse.Namespace) -> None:
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
    check_network(args.network, network_options(args), args.network_weights or "")


def typed_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The options typed on the command line (argparse fills in the others with their defaults); `parser`
    is changed (every default suppressed): pass a fresh one."""
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
        values["model"]["network_options"] = network_options(args)
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
        accepted = option_names(name)
        values["strategy_options"] = {k: v for k, v in values["strategy_options"].items() if k in accepted}
    sets = parse_sets([f"{name}.{item}" if "=" in item and "." not in item.partition("=")[0] else item
                        for item in args.set], [name]) if sets is None else sets
    values["strategy_options"].update(flag_options(name, args, sets))
    return RunConfig.from_dict(values)


def configs_from_file(args: argparse.Namespace, typed: set[str]) -> list[Any]:
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
    strategies = ([with_bias_correction(s.strip(), args) for s in args.strategies.split(",") if s.strip()]
                  if "strategies" in typed else [base.strategy])
    seeds = args.seeds if "seeds" in typed else [base.seed]
    sets = parse_sets(args.set, strategies if len(bases) == 1 else sorted({b.strategy for b in bases}))
    if len(bases) > 1:
        return [_file_config(args, typed, b, sets) for b in bases]
    return [_file_config(args, typed, base, sets, s, seed) for s in strategies for seed in seeds]


def parse_sets(items: list[str], strategies: list[str]) -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not (sep and dot and name and key):
            raise UsageError(f"--set takes STRATEGY.OPTION=VALUE, got {item!r}")
        if name not in strategies:
            raise UsageError(f"--set {item!r}: {name!r} is not among --strategies")
        known = option_names(name)
        if key not in known:
            raise UsageError(f"--set {item!r}: {name} has no option {key!r}; it has {', '.join(sorted(known))}")
        sets.setdefault(name, {})[key] = parse_value(value)
    return sets


def with_bias_correction(name: str, args: argparse.Namespace) -> str:
    return name if args.bias_correction == "none" else f"{name}+{args.bias_correction}"
