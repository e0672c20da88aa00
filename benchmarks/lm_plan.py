"""What a run of benchmarks/lm.py is before it runs: its configuration from (setting, size, method, options, seed),
its key in a result file, the `--set` grid, and which saved runs are at the options configured now."""

from __future__ import annotations

import argparse
import itertools
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from lm_jobs import run_key
from lm_methods import METHODS, SETTINGS, _options

from lifelong.lm.run import LMRunConfig, train_windows
from lifelong.strategies.token_replay import keep_all_budget

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LIFELONG_CACHE", Path.home() / ".cache" / "lifelong")) / "lm"
JSON_WORDS = ("true", "false", "null")  # --set values read as JSON (with numbers, lists and objects)


def run_config(args: argparse.Namespace, size: str, strategy: str, options: dict[str, Any], seed: int) -> LMRunConfig:
    """The run of `strategy` with `options`; `lora` (the adapters' rank), `lr` (Adam's learning rate) and
    `optimizer` ("adam-compiled": the penalty folded into a compiled Adam) are the run's options, not the
    strategy's."""
    setting = SETTINGS[args.setting]
    options = dict(options)
    run: dict[str, Any] = {"lora_rank": int(options.pop("lora", 0)), "lr": float(options.pop("lr", LMRunConfig.lr)),
                           "optimizer": str(options.pop("optimizer", LMRunConfig.optimizer))}
    data = setting["data"]
    if args.split == "valid" and setting.get("valid_facts"):
        data = replace(data, facts=replace(data.facts, valid_facts=True))
    return LMRunConfig(setting["benchmark"], size, strategy, options, replace(data), eval_split=args.split,
                       seed=seed, cache_dir=str(CACHE), device=args.device, **run)


def parse_sets(items: list[str]) -> list[dict[str, Any]]:
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


def result_path(args: argparse.Namespace) -> Path:
    """The setting's result file (`--out` where given)."""
    return Path(args.out or ROOT / "results" / f"lm-{args.setting}{'-valid' if args.split == 'valid' else ''}.json")


def planned_key(args: argparse.Namespace, size: str, strategy: str, options: dict[str, Any], seed: int) -> str:
    """The key (lm_jobs.run_key) that the run of `strategy` with `options` has, or will have once it ran."""
    return run_key({"config": run_config(args, size, strategy, options, seed).to_dict()})


def keep_all_tokens(config: LMRunConfig) -> int:
    """The least token-replay budget that keeps every window the run trains on (6,192,000 in `domains`)."""
    return keep_all_budget(train_windows(config), config.data.length + 1)


def same_run_key(run: dict[str, Any]) -> str:
    """`run_key`, with a token-replay budget past `keep_all_tokens` written as that budget: runs asked with two
    such budgets keep and replay the very same windows, so they are one run (the equal-bytes control of a
    method that stores 25 MB and of one that stores 28 MB, where all the text is 2.5 MB)."""
    c = run["config"]
    tokens = c["options"].get("tokens")
    if tokens is None or "token-replay" not in c["strategy"].split("+"):
        return run_key(run)
    capped = min(int(tokens), keep_all_tokens(LMRunConfig.from_dict(c)))
    return run_key({**run, "config": {**c, "options": {**c["options"], "tokens": capped}}})


def equal_bytes_control(run: dict[str, Any]) -> dict[str, Any]:
    """The configuration (a saved run's `config`) of `run`'s equal-bytes control: token replay given a budget of
    the run's stored bytes, in the same model (LoRA adapters of the same rank, the same lr) on the same data.
    A budget past `keep_all_tokens` is written as that budget, so that every method storing more than the
    whole text shares one control."""
    c = run["config"]
    tokens = min(int(run["stored_bytes"]), keep_all_tokens(LMRunConfig.from_dict(c)))
    return {**c, "strategy": "token-replay", "options": {"tokens": tokens}}


def configured_runs(setting: str, runs: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """The runs at the options each method is configured with at its size now (validation's choices): a
    method also run at other options (LoRA ranks, strengths tried before a size had its own validation)
    counts once, at the options its table row and README figure name. Equal-bytes controls are left out."""
    args = argparse.Namespace(setting=setting, split=split, device="cpu")
    return [r for r in runs if r["method"] in METHODS and run_key(r) == planned_key(
        args, r["config"]["model"], *_options(setting, r["config"]["model"], r["method"], {}), r["config"]["seed"])]
