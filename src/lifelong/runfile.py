r"""Run configs from files: `lifelong run --config run.toml` (or `.json`, or a result file to re-run).

A run config is the dict `lifelong run ... --dry-run` prints (`RunConfig.to_dict()`): the stream,
the strategy and its options, the learner, the model, the seed. Keys left out take the library's
defaults (a file replaces the benchmark's preset); TOML has no null, so a null is written by leaving
the key out. A file may also be a result: `lifelong run --out` writes one run (its `config` is
used, with every strategy option it ran with, defaults of its time included), while `lifelong compare
--out`, the benchmark scripts and `compare --dry-run` hold several (pick one with `--run-index N`,
counted from 0 in the order of the file's `runs`).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "run.toml"
>>> _ = path.write_text('strategy = "ewc"\n[model]\nhidden = [32]\n')
>>> load_run_configs(path)[0].model.hidden
(32,)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifelong.config import check_options
from lifelong.run import RunConfig
from lifelong.strategies import split_name

# Strategy defaults that changed since results without a recorded `strategy_config` were written: such a
# run ran with the value given here. (Behaviour that no option names, such as LwF's one softmax per old
# head or A-GEM's eval-mode reference, cannot be told apart.)
CHANGED_DEFAULTS: dict[str, dict[str, Any]] = {
    "replay": {"selection": "reservoir"}, "agem": {"selection": "reservoir"}, "bic": {"keep_earlier": False},
    "icarl": {"loss": "ce"}, **{n: {"logits_from": "train"} for n in ("der", "der++", "der-ace")},
    **{n: {"samples": None} for n in ("ewc", "online-ewc", "mas")}}


def options_that_ran(record: dict[str, Any]) -> dict[str, Any]:
    """A saved run's strategy options with every option it ran with made explicit: those its result recorded
    (`strategy_config`), else the defaults of its time (CHANGED_DEFAULTS), so that re-running it runs
    what ran then, not today's defaults."""
    config = record["config"]
    options = dict(config["strategy_options"])
    if "strategy_config" in record:
        for recorded in record["strategy_config"].values():
            options.update({k: v for k, v in recorded.items() if k != "seed"})
    else:
        for part in split_name(config["strategy"]):
            for key, value in CHANGED_DEFAULTS.get(part, {}).items():
                options.setdefault(key, value)
    return options


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ValueError(f"{path}: reading TOML on Python 3.10 needs tomli: pip install tomli") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); a TOML file must end in .toml") from None


def _configs(data: Any, path: Path) -> list[Any]:
    """The run config dicts a file holds: itself, a result's `config`, or each run's."""
    if isinstance(data, dict) and "runs" in data and "config" not in data:
        data = data["runs"]
    runs = data if isinstance(data, list) else [data]
    if not runs:
        raise ValueError(f"{path}: holds no run")
    out = []
    for i, run in enumerate(runs):
        where = f"run {i} of " if len(runs) > 1 else ""
        if isinstance(run, dict) and "accuracy_matrix" in run:  # a result record: re-run what ran
            if "config" not in run:
                raise ValueError(f"{path}: {where}a result without its 'config'; it cannot be re-run")
            run = {**run["config"], "strategy_options": options_that_ran(run)}
        if isinstance(run, dict) and run and not set(run) & set(RunConfig.__dataclass_fields__):
            raise ValueError(f"{path}: {where}neither a run config (the keys `lifelong run --dry-run` prints) "
                             f"nor a run's result; it has {', '.join(sorted(run)[:8])}")
        out.append(run)
    return out


def load_run_configs(path: str | Path) -> list[RunConfig]:
    """Every run config in a file (one, except for files of several runs), each checked: an unknown
    key or a value of the wrong type is a ValueError naming the file and the key."""
    path = Path(path)
    configs = []
    for i, values in enumerate(found := _configs(_read(path), path)):
        where = f"{path} (run {i})" if len(found) > 1 else str(path)
        try:
            check_options(RunConfig, values)
            configs.append(RunConfig.from_dict(values))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return configs


def load_run_config(path: str | Path, index: int | None = None) -> RunConfig:
    """The one run config of a file; of a file with several runs, run `index` (refused without it)."""
    configs = load_run_configs(path)
    if index is None and len(configs) > 1:
        listing = ", ".join(f"{i}: {c.strategy} seed {c.seed}" for i, c in enumerate(configs[:8]))
        more = ", ..." if len(configs) > 8 else ""
        raise ValueError(f"{path} holds {len(configs)} runs ({listing}{more}); choose one with --run-index N")
    index = index or 0
    if not 0 <= index < len(configs):
        raise ValueError(f"{path} holds {len(configs)} run(s); --run-index {index} is not among them")
    return configs[index]
