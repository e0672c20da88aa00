"""Named benchmarks: a name and a few options -> a `TaskStream`."""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.config import Config
from lifelong.data.task import InputSpec, TaskStream
from lifelong.data.vision import (
    FASHION_MNIST_CLASSES,
    class_groups,
    load_digits,
    load_fashion_mnist,
    permuted,
    rotated,
    split,
)


@dataclass
class StreamConfig(Config):
    """What to build. `validation` holds out the last share of each task's training data."""

    benchmark: str = "split-digits"
    scenario: str | None = None  # None: the benchmark's natural scenario
    tasks: int | None = None  # None: the benchmark's default
    seed: int = 0
    validation: float = 0.0
    class_order: str = "fixed"  # split and clinc150: classes (domains) in order, or shuffled by the seed
    data_dir: str | None = None  # Fashion-MNIST folder, or the CLINC150 folder for clinc150
    encoder: str = "frozen"  # clinc150: "frozen" (cached embeddings), "finetune" or "lora" (token ids)
    per_intent: int | None = None  # clinc150: keep this many training queries per intent (small slices)
    environments: str | None = None  # control: comma-separated gymnasium ids (default: the scenario's sequence)
    demos: int = 20  # control: expert episodes per task (behaviour cloning)
    eval_episodes: int = 20  # control: seeded episodes per evaluation
    data: str | None = None  # a user's data (`--data SPEC`, lifelong.data.spec); then `benchmark` is not used
    classes_per_task: int | None = None  # streams cut by classes: None: the benchmark's own (C // 5)


DEFAULTS = {  # benchmark -> (default scenario, default number of tasks, allowed scenarios)
    "split-digits": ("task", 5, ("task", "class")),
    "split-fmnist": ("task", 5, ("task", "class")),
    "permuted-fmnist": ("domain", 10, ("domain",)),
    "rotated-fmnist": ("domain", 10, ("domain",)),
    "permuted-digits": ("domain", 5, ("domain",)),
    "clinc150": ("task", 10, ("task", "class")),
    "control": ("task", 3, ("task", "domain")),
}
BENCHMARKS = tuple(DEFAULTS)


def check(cfg: StreamConfig) -> tuple[str, int]:
    """The scenario and number of tasks a config asks for; ValueError if they cannot be built."""
    if cfg.classes_per_task is not None and cfg.classes_per_task < 1:
        raise ValueError(f"a task needs at least one class, not {cfg.classes_per_task}")
    if cfg.data:  # a user's data: what can be told without reading it (lifelong.data.files reads and checks it)
        from lifelong.data.files import check_spec

        check_spec(cfg.data, cfg.scenario)
        if cfg.tasks is not None and cfg.tasks < 1:
            raise ValueError(f"a stream needs at least one task, not {cfg.tasks}")
        return cfg.scenario or "", cfg.tasks or 0
    if cfg.classes_per_task is not None and not cfg.benchmark.startswith("split"):
        raise ValueError(f"--classes-per-task applies to streams cut by classes (split-*, --data), not {cfg.benchmark}")
    if cfg.benchmark.startswith("split"):  # both have 10 classes: tell a bad --tasks now, not after loading
        class_groups(10, cfg.tasks, cfg.classes_per_task or 10 // DEFAULTS[cfg.benchmark][1])
    if cfg.benchmark not in DEFAULTS:
        raise ValueError(f"unknown benchmark {cfg.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    default_scenario, default_tasks, allowed = DEFAULTS[cfg.benchmark]
    scenario = cfg.scenario or default_scenario
    if scenario not in allowed:
        raise ValueError(f"{cfg.benchmark} supports scenario {' or '.join(allowed)}, not {scenario!r}")
    tasks = cfg.tasks or default_tasks
    if cfg.benchmark == "control" and cfg.environments and "," in cfg.environments and not cfg.tasks:
        tasks = len(cfg.environments.split(","))
    if tasks < 1:
        raise ValueError(f"a stream needs at least one task, not {tasks}")
    return scenario, tasks


def build_stream(cfg: StreamConfig) -> TaskStream:
    scenario, tasks = check(cfg)
    if cfg.data:
        from lifelong.data.files import Cut, file_stream

        cut = Cut(cfg.scenario, cfg.tasks, cfg.classes_per_task, cfg.class_order, cfg.seed, cfg.validation)
        return file_stream(cfg.data, cut, cfg.encoder)
    if cfg.benchmark == "clinc150":
        return _clinc150(cfg, scenario, tasks)
    if cfg.benchmark == "control":
        return _control(cfg, scenario, tasks)
    digits = cfg.benchmark.endswith("digits")
    train, test = load_digits() if digits else load_fashion_mnist(cfg.data_dir)
    names = None if digits else FASHION_MNIST_CLASSES
    kind = cfg.benchmark.split("-")[0]
    if kind == "split":  # --tasks N: the first N of the benchmark's tasks, as clinc150 takes the first N domains
        per_task = cfg.classes_per_task or int(train.y.max() + 1) // DEFAULTS[cfg.benchmark][1]
        return split(train, test, cfg.tasks, scenario, cfg.seed, cfg.validation, cfg.class_order,
                     cfg.benchmark, names, per_task)
    builder = permuted if kind == "permuted" else rotated
    stream = builder(train, test, tasks, cfg.seed, cfg.validation, name=cfg.benchmark)
    stream.class_names = names
    return stream


def _clinc150(cfg: StreamConfig, scenario: str, tasks: int) -> TaskStream:
    from lifelong import encoders
    from lifelong.data.text import clinc150_stream, load_clinc150

    featurize = encoders.featurizer(cfg.encoder)
    stream = clinc150_stream(load_clinc150(cfg.data_dir), featurize, scenario, tasks, cfg.class_order, cfg.seed,
                             cfg.per_intent)
    shape = (encoders.FEATURES,) if cfg.encoder == "frozen" else (encoders.MAX_TOKENS,)
    stream.input = InputSpec("text", shape, cfg.encoder)
    return stream


def _control(cfg: StreamConfig, scenario: str, tasks: int) -> TaskStream:
    from lifelong.data.control import DEFAULT_TASK_SEQUENCE, REWIRABLE, EnvSpec, control_stream, rewired_sequence

    sequence = cfg.environments or ("classic" if scenario == "task" else "lander-rewired")
    if sequence == "classic":
        specs = list(DEFAULT_TASK_SEQUENCE)
    elif sequence.endswith("-rewired") and sequence.removesuffix("-rewired") in REWIRABLE:
        specs = list(rewired_sequence(sequence.removesuffix("-rewired"), tasks))
    else:
        specs = [EnvSpec(e.strip()) for e in sequence.split(",") if e.strip()]
    if cfg.tasks:
        if cfg.tasks > len(specs):
            raise ValueError(f"asked for {cfg.tasks} control tasks; the sequence has {len(specs)}")
        specs = specs[: cfg.tasks]
    return control_stream(specs, scenario, cfg.demos, cfg.eval_episodes, cfg.seed, name="control")
