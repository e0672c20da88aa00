"""Shared by the benchmark scripts: run every strategy with every seed on named settings, aggregate,
print the Markdown table and write results/<prefix>-<setting>.json.

Strategy hyperparameters come from the validation-split tuning files under results/tuning/
(benchmarks/tune.py); a strategy without one keeps its default, and the JSON says which was used.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from lifelong.data.streams import StreamConfig
from lifelong.learner import LearnerConfig
from lifelong.presets import Preset
from lifelong.reporting import CLASS_IL_KEYS, aggregate, environment, format_compare, write_json
from lifelong.run import ModelConfig, RunConfig, run, seeded
from lifelong.runfile import options_that_ran
from lifelong.strategies import build_strategy, split_name, strategy_config

ROOT = Path(__file__).resolve().parent.parent
TUNING = ROOT / "results" / "tuning"
STRATEGIES = "naive,joint,replay,ewc,online-ewc,si,mas,ewc+replay"


@dataclass
class Setting:
    stream: StreamConfig
    learner: LearnerConfig
    model: ModelConfig
    memory: int = 600  # the memory budget in samples, for every strategy that stores samples
    tuning: str = ""  # results/tuning/<tuning>-<strategy>.json holds the chosen options
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # fixed options per strategy name
    mode: str = "supervised"
    rl_steps: int = 50_000
    learners: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy part -> learner options

    @classmethod
    def from_preset(cls, preset: Preset, **changes: Any) -> Setting:
        """The regime of a library preset (what `lifelong run` uses by default for that benchmark)."""
        setting = cls(preset.stream, preset.learner, preset.model, preset.memory, preset.tuning,
                      learners=preset.learners)
        return replace(setting, **changes)

    def learner_for(self, strategy: str) -> LearnerConfig:
        changes: dict[str, Any] = {}
        for part in split_name(strategy):
            changes.update(self.learners.get(part, {}))
        return replace(self.learner, **changes)


MEMORY_METHODS = {"replay", "agem", "der", "der++", "der-ace", "er-ace", "icarl"}


def tuned_options(setting: Setting, strategy: str) -> tuple[dict[str, Any], list[str]]:
    """The options chosen on validation for each part of a strategy, and the files they came from."""
    options: dict[str, Any] = {}
    sources = []
    parts = split_name(strategy)
    # a composition tuned as a whole (results/tuning/<key>-der+++bic.json) overrides its parts' files
    for part in [*parts, "+".join(parts)] if len(parts) > 1 else parts:
        path = TUNING / f"{setting.tuning}-{part}.json"
        saved = json.loads(path.read_text()) if setting.tuning and path.exists() else {}
        if "chosen" in saved:  # (naive's file holds its validation run, the floor of the rule, not a choice)
            # `learner.` keys (a strategy's own training regime) reach the run through the preset's learners,
            # which tests/test_presets.py holds equal to these files
            options.update({k: v for k, v in saved["chosen"].items() if not k.startswith("learner.")})
            sources.append(str(path.relative_to(ROOT)))
    if MEMORY_METHODS & set(parts):
        options["memory"] = setting.memory
    options.update(setting.options.get(strategy, {}))
    return options, sources


def run_settings(settings: dict[str, Setting], prefix: str, description: str) -> int:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(settings))
    p.add_argument("--strategies", default=STRATEGIES)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out-dir", default=str(ROOT / "results"))
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs already in the output file whose configuration is unchanged")
    p.add_argument("--rerun", default="", metavar="STRATEGIES",
                   help="with --resume: run these strategies again even where a saved run has the same "
                   "configuration (after a change of their code or defaults)")
    p.add_argument("--threads", type=int, help="torch threads (1 makes runs bit-for-bit reproducible)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.settings.split(","):
        setting = settings[name]
        out = Path(args.out_dir) / f"{prefix}-{name}.json"
        done = _finished_runs(out) if args.resume else {}
        rerun = {frozenset(split_name(s)) for s in args.rerun.split(",") if s}
        done = {k: r for k, r in done.items() if frozenset(split_name(r["strategy"])) not in rerun}
        results, sources = [], {}
        for strategy in args.strategies.split(","):
            options, sources[strategy] = tuned_options(setting, strategy)
            for seed in seeds:
                cfg = RunConfig(replace(setting.stream), strategy, options, setting.learner_for(strategy),
                                setting.model, seed, mode=setting.mode, rl_steps=setting.rl_steps)
                r = _saved(done, cfg) or run(cfg).record
                print(f"{name} {strategy} seed {seed}: final {r['average_accuracy']:.3f} learning "
                      f"{r['learning_accuracy']:.3f} retention {r['average_retention']:.3f} ({r['seconds']:.0f} s)",
                      flush=True)
                results.append(r)
                # written after every run, so a long benchmark that is stopped resumes with --resume
                _write(out, name, seeds, sources, _with_kept(results, done, args.strategies, final=False),
                       complete=False)
        results = _with_kept(results, done, args.strategies)
        # the tuning files behind every strategy in the file, the kept ones' included
        sources = {s: tuned_options(setting, s)[1] for s in dict.fromkeys(r["strategy"] for r in results)}
        rows = _write(out, name, seeds, sources, results, complete=True)
        first = results[0]
        table = _table(rows, first["scenario"])
        print(f"\n{first['benchmark']}, {first['scenario']}-incremental, {len(first['tasks'])} tasks, seeds "
              f"{args.seeds}\n\n{table}\n\nwritten to {out}\n", flush=True)
    return 0


def _finished_runs(path: Path) -> dict[str, dict[str, Any]]:
    """Runs already saved in `path`, keyed by what ran (`_identity`)."""
    if not path.exists():
        return {}
    return {_identity(r): r for r in json.loads(path.read_text()).get("runs", [])}


def _identity(record: dict[str, Any]) -> str:
    """What a saved run ran: its config as this version reads it (fields added since take their
    defaults, which reproduce what ran then) with every strategy option resolved (recorded in
    `strategy_config`, options added since at their defaults; for older runs, the defaults of their time)."""
    config = record["config"]
    resolved = strategy_config(build_strategy(config["strategy"], options_that_ran(record)))
    return _key(seeded(RunConfig.from_dict(config)).to_dict(), resolved)


def _saved(done: dict[str, dict[str, Any]], cfg: RunConfig) -> dict[str, Any] | None:
    """The saved run of this configuration, if any. A run records its config with the seed passed
    down to the stream and the learner (`seeded`), so that is what it is looked up by."""
    cfg = seeded(cfg)
    return done.get(_key(cfg.to_dict(), strategy_config(build_strategy(cfg.strategy, cfg.strategy_options))))


def _key(config: dict[str, Any], resolved: dict[str, dict[str, Any]]) -> str:
    """A run's identity: its configuration with every option of every strategy part, defaults included
    (the seed a run passes to its strategy is the run's own seed, already in the config)."""
    parts = {name: {k: v for k, v in options.items() if k != "seed"} for name, options in resolved.items()}
    return json.dumps({**config, "strategy_options": parts}, sort_keys=True)


def _with_kept(results: list[dict[str, Any]], done: dict[str, dict[str, Any]], asked: str,
               final: bool = True) -> list[dict[str, Any]]:
    """This invocation's runs plus the earlier ones it did not repeat (e.g. a costly joint run kept
    at one seed while the other strategies ran three), in the default strategy order."""
    asked_names = {frozenset(split_name(a)) for a in asked.split(",")}
    ran = {_identity(r) for r in results}
    # a strategy asked for now keeps only its runs of now; until the end, the saved runs not yet
    # reached stay in the file too, so that stopping a resumed run loses nothing
    merged = results + [r for key, r in done.items() if key not in ran
                        and (not final or frozenset(split_name(r["strategy"])) not in asked_names)]
    order = list(dict.fromkeys([*asked.split(","), *STRATEGIES.split(","), *(r["strategy"] for r in merged)]))
    return sorted(merged, key=lambda r: (order.index(r["strategy"]), r["config"]["seed"]))


def _write(out: Path, name: str, seeds: list[int], sources: dict[str, list[str]], results: list[dict[str, Any]],
           complete: bool) -> list[dict[str, Any]]:
    rows = aggregate(results)
    first = results[0]
    write_json(out, {"setting": name, "benchmark": first["benchmark"], "scenario": first["scenario"],
                     "seeds": seeds, "complete": complete, "hyperparameters_from": sources, "summary": rows,
                     "table": _table(rows, first["scenario"]), "runs": results, "environment": environment()})
    return rows


def _table(rows: list[dict[str, Any]], scenario: str) -> str:
    return format_compare(rows, CLASS_IL_KEYS) if scenario == "class" else format_compare(rows)
