"""Benchmark presets: each benchmark's defaults are the regime of its README table.

A preset is the training regime a README table ran with (epochs, batch, optimizer, network, memory
budget) and each strategy's options chosen on the validation split by `benchmarks/tune.py` (the files
under results/tuning/ record every value tried; tests/test_presets.py checks these values against
them). `lifelong run` and `compare` start from the preset of the benchmark asked for and print it;
flags given on the command line override it, and `--no-preset` starts from the library's plain
defaults instead. The benchmark scripts build their settings from the same presets.

>>> p = preset_for("permuted-fmnist")
>>> p.learner.epochs, p.model.dropout, p.options["ewc"]["strength"]
(2, 0.3, 1000.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lifelong.config import Config
from lifelong.data.streams import StreamConfig, check
from lifelong.learner import LearnerConfig
from lifelong.models import ModelConfig
from lifelong.strategies import option_names, split_name

# strategies that store samples: the preset's memory budget is theirs
MEMORY_STRATEGIES = ("replay", "agem", "der", "der++", "der-ace", "er-ace", "icarl")


@dataclass
class Preset(Config):
    """The regime of one README table and the options chosen for its strategies on validation data."""

    key: str
    table: str  # the README table it reproduces
    stream: StreamConfig
    learner: LearnerConfig
    model: ModelConfig
    memory: int = 600  # samples stored by every strategy that stores samples
    tuning: str = ""  # results/tuning/<tuning>-<strategy>.json hold the choices below
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy part -> options
    learners: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy part -> learner options

    def strategy_options(self, strategy: str) -> dict[str, Any]:
        """The preset's options for a (possibly composed) strategy: each part's tuned options, and the
        memory budget for the parts that store samples."""
        parts = split_name(strategy)
        options: dict[str, Any] = {}
        for part in parts:
            options.update(self.options.get(part, {}))
        options.update(self.options.get("+".join(parts), {}))  # a composition tuned as a whole
        if set(parts) & set(MEMORY_STRATEGIES):
            options["memory"] = self.memory
        known = option_names(strategy)
        return {k: v for k, v in options.items() if k in known}

    def learner_for(self, strategy: str) -> LearnerConfig:
        changes: dict[str, Any] = {}
        for part in split_name(strategy):
            changes.update(self.learners.get(part, {}))
        return self.learner.replace(**changes)

    def describe(self, strategy: str) -> str:
        """One line saying what a run of `strategy` under this preset uses."""
        learner, model = self.learner_for(strategy), self.model
        opt = learner.optimizer if learner.optimizer != "auto" else "optimizer of the strategy"
        net = f"{model.kind} {','.join(map(str, model.hidden))}"
        net += f" dropout {model.dropout}" if model.dropout else ""
        options = self.strategy_options(strategy)
        source = f" (results/tuning/{self.tuning}-*.json)" if self.tuning and options else ""
        return (f"preset {self.key!r}, the regime of the README's {self.table!r} table: {learner.epochs} epoch(s), "
                f"batch {learner.batch_size}, {opt} lr {learner.lr or 'default'}, {net}; {strategy} options "
                f"{options or 'defaults'}{source}. Flags override it; --no-preset uses the library defaults.")


def _vision(key: str, stream: StreamConfig, tuning: str, options: dict[str, dict[str, Any]], table: str) -> Preset:
    # Adam 1e-3 fresh per task, batch 128, 2 epochs, dropout 0.3, MLP 784-400-400-10, 600 stored samples (1 %)
    return Preset(key, table, stream, LearnerConfig(epochs=2, batch_size=128, lr=1e-3),
                  ModelConfig("mlp", (400, 400), 0.3), 600, tuning, options)


CLASS_IL_OPTIONS = {"ewc": {"strength": 100.0}, "lwf": {"distill": 1.0}, "der": {"alpha": 2.0},
                    "der++": {"alpha": 1.0, "beta": 2.0}, "der-ace": {"alpha": 1.0, "beta": 1.0},
                    "der+++bic": {"alpha": 1.0, "beta": 2.0, "replay_batch": 256}}
FINETUNE_OPTIONS = {"ewc": {"strength": 1e5}, "online-ewc": {"strength": 1e5}, "si": {"strength": 1e4},
                    "mas": {"strength": 100.0}, "online-kfac-ewc": {"strength": 1e4},
                    "gpm": {"threshold": 0.8}}
# lr 2e-4 for online Kronecker EWC: chosen on validation with its strength (1e-4, 2e-4, 3e-4 at 1e4;
# results/tuning/clinc150-task-finetune-online-kfac-ewc.json); the other strategies keep the table's 1e-4
FINETUNE_LEARNERS: dict[str, dict[str, Any]] = {"online-kfac-ewc": {"lr": 2e-4}}
FINETUNE = (LearnerConfig(epochs=2, batch_size=32, lr=1e-4), ModelConfig("mlp", (256,)))
# lr 3e-3: chosen for naive sequential LoRA on validation among 1e-3, 3e-3, 1e-2
# (results/tuning/clinc150-lora-regime-naive-lr.json)
LORA = (LearnerConfig(epochs=2, batch_size=32, lr=3e-3), ModelConfig("mlp", (256,)))
LORA_OPTIONS: dict[str, dict[str, Any]] = {"olora": {"mode": "inputs"}, "ewc": {"strength": 1e5}}
FROZEN = (LearnerConfig(epochs=5, batch_size=32, lr=1e-3), ModelConfig("mlp", (256, 256), 0.3))
BEHAVIOUR_CLONING = (LearnerConfig(epochs=30, batch_size=64, lr=1e-3), ModelConfig("mlp", (64, 64)))

PRESETS: dict[str, Preset] = {p.key: p for p in (
    _vision("permuted-fmnist", StreamConfig("permuted-fmnist", "domain", 10), "permuted-fmnist-domain",
            {"ewc": {"strength": 1000.0}, "online-ewc": {"strength": 300.0, "gamma": 0.9}, "si": {"strength": 10.0},
             "mas": {"strength": 0.3}, "gpm": {"threshold": 0.97}, "online-kfac-ewc": {"strength": 10.0}},
            "Permuted Fashion-MNIST, 10 tasks"),
    _vision("split-fmnist/task", StreamConfig("split-fmnist", "task", 5), "split-fmnist-task",
            {"ewc": {"strength": 1e4}, "online-ewc": {"strength": 1e4}, "si": {"strength": 100.0},
             "mas": {"strength": 0.3}}, "Split Fashion-MNIST, 5 tasks, task-IL"),
    # class-IL: the class-incremental table's regime (1 epoch, no dropout), where every peer ran
    Preset("split-fmnist/class", "Split Fashion-MNIST class-IL, memory 600", StreamConfig("split-fmnist", "class", 5),
           LearnerConfig(epochs=1, batch_size=128, lr=1e-3), ModelConfig("mlp", (400, 400), 0.0), 600,
           "split-fmnist-class-il", CLASS_IL_OPTIONS, {"agem": {"optimizer": "sgd", "lr": 0.01}}),
    Preset("split-digits/class", "class-IL, split digits", StreamConfig("split-digits", "class", 5),
           LearnerConfig(epochs=10, batch_size=32), ModelConfig("mlp", (100, 100)), 100),
    Preset("clinc150/task/frozen", "CLINC150, 10 domains, task-IL (frozen MiniLM)",
           StreamConfig("clinc150", "task", 10, encoder="frozen"), *FROZEN, 150, "clinc150-task-frozen",
           {"ewc": {"strength": 100.0}, "online-ewc": {"strength": 100.0}, "si": {"strength": 10.0},
            "mas": {"strength": 0.01}}),
    Preset("clinc150/class/frozen", "CLINC150, 10 domains, class-IL (frozen MiniLM)",
           StreamConfig("clinc150", "class", 10, encoder="frozen"), *FROZEN, 150, "clinc150-class-frozen",
           {"ewc": {"strength": 100.0}, "der++": {"alpha": 2.0, "beta": 1.0}}),
    # fine-tuned: the first 5 domains, 30 training queries per intent (so every run fits 2 CPU cores)
    Preset("clinc150/task/finetune", "CLINC150, 5 domains, task-IL (fine-tuned MiniLM)",
           StreamConfig("clinc150", "task", 5, encoder="finetune", per_intent=30), *FINETUNE, 25,
           "clinc150-task-finetune", FINETUNE_OPTIONS, FINETUNE_LEARNERS),
    # LoRA rank 8 on attention's query and value, every method the same rank: naive is sequential LoRA (issue 18)
    Preset("clinc150/task/lora", "CLINC150, 5 domains, task-IL (MiniLM with LoRA adapters)",
           StreamConfig("clinc150", "task", 5, encoder="lora", per_intent=30), *LORA, 25,
           "clinc150-task-lora", LORA_OPTIONS),
    Preset("clinc150/class/finetune", "CLINC150, 5 domains, class-IL (fine-tuned MiniLM)",
           StreamConfig("clinc150", "class", 5, encoder="finetune", per_intent=30), *FINETUNE, 25,
           "clinc150-task-finetune", FINETUNE_OPTIONS, FINETUNE_LEARNERS),
    Preset("control/task/classic", "CartPole -> Acrobot -> LunarLander, behaviour cloning",
           StreamConfig("control", "task", environments="classic"), *BEHAVIOUR_CLONING, 500),
    Preset("control/task/lander-rewired", "LunarLander, 3 rewired sensor boards, behaviour cloning",
           StreamConfig("control", "task", environments="lander-rewired"), *BEHAVIOUR_CLONING, 500,
           "control-task-lander-rewired", {"ewc": {"strength": 1e5}}),
)}


def preset_key(stream: StreamConfig) -> str:
    """The preset key of a stream config: benchmark, then scenario, encoder or environments where
    the benchmark has several regimes."""
    scenario, _ = check(stream)
    if stream.benchmark in ("permuted-fmnist",):
        return stream.benchmark
    if stream.benchmark == "clinc150":
        return f"clinc150/{scenario}/{stream.encoder}"
    if stream.benchmark == "control":
        return f"control/{scenario}/{stream.environments or ('classic' if scenario == 'task' else 'lander-rewired')}"
    return f"{stream.benchmark}/{scenario}"


def preset_for(benchmark: str, scenario: str | None = None, **stream: Any) -> Preset | None:
    """The preset of a benchmark (and scenario, encoder or environments), or None where no README
    table sets one."""
    return PRESETS.get(preset_key(StreamConfig(benchmark, scenario, **stream)))
