"""Named benchmarks: a name and a few options -> a `TaskStream`."""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.data.task import TaskStream
from lifelong.data.vision import (
    FASHION_MNIST_CLASSES,
    load_digits,
    load_fashion_mnist,
    permuted,
    rotated,
    split,
)


@dataclass
class StreamConfig:
    """What to build. `validation` holds out the last share of each task's training data."""

    benchmark: str = "split-digits"
    scenario: str | None = None  # None: the benchmark's natural scenario
    tasks: int | None = None  # None: the benchmark's default
    seed: int = 0
    validation: float = 0.0
    class_order: str = "fixed"
    data_dir: str | None = None


DEFAULTS = {  # benchmark -> (default scenario, default number of tasks, allowed scenarios)
    "split-digits": ("task", 5, ("task", "class")),
    "split-fmnist": ("task", 5, ("task", "class")),
    "permuted-fmnist": ("domain", 10, ("domain",)),
    "rotated-fmnist": ("domain", 10, ("domain",)),
    "permuted-digits": ("domain", 5, ("domain",)),
}
BENCHMARKS = tuple(DEFAULTS)


def check(cfg: StreamConfig) -> tuple[str, int]:
    """The scenario and number of tasks a config asks for; ValueError if they cannot be built."""
    if cfg.benchmark not in DEFAULTS:
        raise ValueError(f"unknown benchmark {cfg.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    default_scenario, default_tasks, allowed = DEFAULTS[cfg.benchmark]
    scenario = cfg.scenario or default_scenario
    if scenario not in allowed:
        raise ValueError(f"{cfg.benchmark} supports scenario {' or '.join(allowed)}, not {scenario!r}")
    tasks = cfg.tasks or default_tasks
    if tasks < 1:
        raise ValueError(f"a stream needs at least one task, not {tasks}")
    return scenario, tasks


def build_stream(cfg: StreamConfig) -> TaskStream:
    scenario, tasks = check(cfg)
    digits = cfg.benchmark.endswith("digits")
    train, test = load_digits() if digits else load_fashion_mnist(cfg.data_dir)
    names = None if digits else FASHION_MNIST_CLASSES
    kind = cfg.benchmark.split("-")[0]
    if kind == "split":
        return split(train, test, tasks, scenario, cfg.seed, cfg.validation, cfg.class_order,
                     cfg.benchmark, names)
    builder = permuted if kind == "permuted" else rotated
    stream = builder(train, test, tasks, cfg.seed, cfg.validation, name=cfg.benchmark)
    stream.class_names = names
    return stream
