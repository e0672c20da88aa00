"""stream + learner -> accuracy matrix -> result: one continual-learning run, end to end."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from lifelong.data.streams import StreamConfig, build_stream
from lifelong.data.task import TaskStream, fetch
from lifelong.distributed import local_numel
from lifelong.evaluation.matrix import AccuracyMatrix
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import CNN, MLP, ContinualClassifier
from lifelong.report import environment
from lifelong.resume import load_progress, save_progress
from lifelong.strategies import build_strategy
from lifelong.strategies.base import state_nbytes


@dataclass
class ModelConfig:
    kind: str = "mlp"  # "mlp" or "cnn"
    hidden: tuple[int, ...] = (400, 400)  # mlp: hidden widths; cnn: the width of its one hidden fc layer
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "cnn"):
            raise ValueError(f"model kind must be 'mlp' or 'cnn', not {self.kind!r}")


@dataclass
class RunConfig:
    """Everything that decides a run; it is written into the result so the run can be repeated."""

    stream: StreamConfig = field(default_factory=StreamConfig)
    strategy: str = "naive"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    eval_split: str = "test"  # "valid" to tune hyperparameters without touching the test set
    specialist: bool = False  # also train one model per task alone, for retention against it
    mode: str = "supervised"  # control: "supervised" (behaviour cloning) or "rl" (a DQN agent)
    rl_steps: int = 50_000  # rl: environment steps per task
    agent: str = "dqn"  # rl: "dqn" (double DQN) or "ppo"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        model = dict(d.get("model", {}))
        if "hidden" in model:
            model["hidden"] = tuple(model["hidden"])
        return cls(StreamConfig(**d.get("stream", {})), d.get("strategy", "naive"),
                   dict(d.get("strategy_options", {})), LearnerConfig(**d.get("learner", {})),
                   ModelConfig(**model), d.get("seed", 0), d.get("eval_split", "test"),
                   d.get("specialist", False), d.get("mode", "supervised"), d.get("rl_steps", 50_000),
                   d.get("agent", "dqn"))


def seeded(cfg: RunConfig) -> RunConfig:
    """The config with its one seed passed down to the stream, the learner and the strategy."""
    return replace(cfg, stream=replace(cfg.stream, seed=cfg.seed), learner=replace(cfg.learner, seed=cfg.seed),
                   strategy_options={**cfg.strategy_options, "seed": cfg.seed})


def build_model(stream: TaskStream, cfg: ModelConfig) -> ContinualClassifier:
    if stream.info.get("encoder") in ("finetune", "lora"):
        from lifelong.models.text import build_text_model

        return ContinualClassifier(build_text_model(stream.info["encoder"], stream.num_classes), len(stream),
                                   stream.num_classes)
    if stream.info.get("kind") == "control":
        size = stream.info["obs_size"]
        if stream.scenario == "task":
            from lifelong.models.control import TaskInputMLP

            policy = TaskInputMLP(len(stream), size, cfg.hidden, stream.num_classes)
            return ContinualClassifier(policy, len(stream), stream.num_classes)
        return ContinualClassifier(MLP(size, cfg.hidden, stream.num_classes, cfg.dropout), len(stream),
                                   stream.num_classes)
    x, _ = fetch(stream[0].train, torch.tensor([0]))
    if cfg.kind == "cnn":
        if x.dim() != 4:
            raise ValueError(f"a cnn needs image inputs [N, C, H, W], this stream gives {tuple(x.shape)}")
        net: torch.nn.Module = CNN(x.shape[1], x.shape[-1], stream.num_classes, cfg.hidden[0], cfg.dropout)
    else:
        net = MLP(math.prod(x.shape[1:]), cfg.hidden, stream.num_classes, cfg.dropout)
    return ContinualClassifier(net, len(stream), stream.num_classes)


def _specialist_accuracy(stream: TaskStream, cfg: RunConfig, split: str) -> list[float]:
    """Accuracy of a fresh model trained on each task alone (same model, optimizer and epochs)."""
    out = []
    for task in stream:
        alone = TaskStream([replace(task, id=0)], stream.num_classes, "task", info=stream.info)
        torch.manual_seed(cfg.seed)
        learner = Learner(build_model(alone, cfg.model), build_strategy("naive"), cfg.learner)
        learner.fit(alone, 0)
        out.append(learner.evaluate(alone, split)[0])
    return out


HISTOGRAM_EDGES = [float(e) for e in np.linspace(-12, 4, 33)]  # log10 of importance


def importance_histograms(strategy: Any) -> dict[str, dict[str, Any]]:
    """Per parameter tensor, a histogram of log10(importance) of every consolidation part (EWC's
    Fisher, SI's and MAS's Omega, accumulated), with the count of exact zeros, for reports."""
    out: dict[str, dict[str, Any]] = {}
    for part in getattr(strategy, "parts", [strategy]):
        quadratic = getattr(part, "quadratic", None)
        if quadratic is None or quadratic.empty:
            continue
        for name, precision in zip(quadratic.names, quadratic.precision, strict=True):
            values = precision.flatten()
            positive = values[values > 0]
            counts, _ = np.histogram(np.log10(positive.numpy()), bins=HISTOGRAM_EDGES)
            out[f"{part.name}:{name}"] = {"edges": HISTOGRAM_EDGES, "counts": counts.tolist(),
                                          "zeros": int((values == 0).sum()), "size": int(values.numel())}
    return out


def run(cfg: RunConfig, progress: bool = False, stream: TaskStream | None = None,
        checkpoint_dir: str | None = None, resume: bool = False,
        trained: dict[str, Any] | None = None, log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Learn the stream task by task, evaluating every task after each; return the result dict.

    `log`: called with each training step's record and, after each task, with
    ``{"task", "step", "accuracy": [per task]}`` (see `lifelong.logs`).

    `checkpoint_dir`: save the progress after each task there; `resume`: continue from it.
    `trained`: a dict that receives the trained `model`, `strategy` and `stream` (to save the model)."""
    cfg = seeded(cfg)
    started = time.perf_counter()
    stream = stream if stream is not None else build_stream(cfg.stream)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(stream, cfg.model)
    strategy = build_strategy(cfg.strategy, cfg.strategy_options)
    if cfg.mode == "rl" and cfg.agent == "ppo":
        from lifelong.agents import PPOAgent, PPOConfig

        learner: Learner = PPOAgent(model, strategy, len(stream), stream.info["obs_size"], cfg.model.hidden,
                                    PPOConfig(steps=cfg.rl_steps, seed=cfg.seed), progress)
    elif cfg.mode == "rl":
        if cfg.agent != "dqn":
            raise ValueError(f"agent must be 'dqn' or 'ppo', not {cfg.agent!r}")
        from lifelong.agents import DQNAgent, DQNConfig

        learner = DQNAgent(model, strategy, DQNConfig(steps=cfg.rl_steps, seed=cfg.seed), progress)
    else:
        learner = Learner(model, strategy, cfg.learner, progress=progress, log=log)

    first = 0
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resuming needs the checkpoint directory")
        saved = load_progress(checkpoint_dir, cfg.to_dict())
        model.load_state_dict(saved["model"])
        strategy.load_state_dict(saved["strategy"])
        learner.generator.set_state(saved["generator"])
        learner.step = saved["step"]
        if saved["optimizer"] is not None:
            learner.optimizer = learner._new_optimizer()
            learner.optimizer.load_state_dict(saved["optimizer"])
        baseline, per_task, first = saved["baseline"], saved["per_task"], saved["task"] + 1
        matrix = AccuracyMatrix.from_list(saved["matrix"], baseline)
    else:
        baseline = [learner.task_accuracy(stream, j, cfg.eval_split, position=j) for j in range(len(stream))]
        matrix = AccuracyMatrix(len(stream), baseline)
        per_task = []
    tasks = range(first, len(stream))
    if progress:
        from tqdm.auto import tqdm

        tasks = tqdm(tasks, desc=f"{cfg.strategy} on {stream.name}", unit="task")
    for i in tasks:
        stats = learner.fit(stream, i)
        t0 = time.perf_counter()
        accuracies, stats["recency_bias"] = learner.evaluate_details(stream, cfg.eval_split)
        matrix.update(i, accuracies)
        if log is not None:
            log({"task": i, "step": learner.step, "accuracy": accuracies})
        stats["eval_seconds"] = time.perf_counter() - t0
        with torch.no_grad():
            stats["penalty"] = float(strategy.penalty(model))
        stats["importance_histograms"] = importance_histograms(strategy)
        per_task.append(stats)
        if checkpoint_dir is not None:
            keep_optimizer = learner.optimizer is not None and not cfg.learner.reset_optimizer
            save_progress(checkpoint_dir, {
                "config": cfg.to_dict(), "task": i, "model": model.state_dict(), "strategy": strategy.state_dict(),
                "generator": learner.generator.get_state(), "step": learner.step,
                "optimizer": learner.optimizer.state_dict() if keep_optimizer else None,  # type: ignore[union-attr]
                "baseline": baseline, "per_task": per_task, "matrix": matrix.tolist()})
    specialist = _specialist_accuracy(stream, cfg, cfg.eval_split) if cfg.specialist else None
    extra: dict[str, Any] = {}
    if "random_return" in stream.info:  # control: the matrix holds returns; metrics use normalised ones
        from lifelong.data.control import normalise

        rand, expert = stream.info["random_return"], stream.info["expert_return"]
        extra = {"return_matrix": matrix.tolist(), "baseline_return": baseline, "random_return": rand,
                 "expert_return": expert}
        matrix = AccuracyMatrix.from_list(normalise(matrix.values.tolist(), rand, expert),
                                          normalise([baseline], rand, expert)[0])
        baseline = matrix.baseline or baseline
    if trained is not None:
        trained.update(model=model, strategy=strategy, stream=stream)
    return {
        **extra,
        "config": cfg.to_dict(),
        "strategy": strategy.name,
        "benchmark": stream.name,
        "scenario": stream.scenario,
        "eval_split": cfg.eval_split,
        "tasks": [{"id": t.id, "name": t.name, "classes": list(t.classes), "train_size": len(t.train),
                   "eval_size": None if t.evaluator else len(t.eval_data(cfg.eval_split))} for t in stream],
        "accuracy_matrix": matrix.tolist(),
        "baseline_accuracy": baseline,
        "specialist_accuracy": specialist,
        **matrix.compute(specialist),
        "per_task": per_task,
        "seconds": time.perf_counter() - started,
        "train_seconds": sum(s["train_seconds"] + s["after_task_seconds"] for s in per_task),
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_bytes": state_nbytes(strategy.state_dict()),
        "local_parameters": local_numel(model),
        "consolidation_bytes": sum(part.quadratic.nbytes() for part in getattr(strategy, "parts", [strategy])
                                   if hasattr(part, "quadratic")),
        "recency_bias": per_task[-1]["recency_bias"],
        "environment": environment(),
    }
