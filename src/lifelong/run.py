"""stream + learner -> accuracy matrix -> result: one continual-learning run, end to end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from lifelong.config import Config
from lifelong.data.streams import StreamConfig, build_stream
from lifelong.data.task import TaskStream
from lifelong.distributed import local_numel
from lifelong.evaluation.matrix import AccuracyMatrix
from lifelong.importance.estimate import WHOLE_MODEL_FALLBACKS, fallbacks
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import ContinualClassifier, ModelConfig, NetworkSpec, model_for
from lifelong.reporting import environment
from lifelong.reporting.importance import consolidation_bytes, importance_histograms
from lifelong.resume import load_progress, save_progress
from lifelong.strategies import build_strategy, protection, strategy_config
from lifelong.strategies.base import Strategy, state_nbytes

__all__ = ["ModelConfig", "RunConfig", "RunResult", "build_learner", "learn_task", "run", "seeded"]

Log = Callable[[dict[str, Any]], None]


@dataclass
class RunConfig(Config):
    """Everything that decides a run; it is written into the result so the run can be repeated."""

    stream: StreamConfig = field(default_factory=StreamConfig)
    strategy: str = "naive"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    eval_split: str = "test"  # "valid" to tune hyperparameters without touching the test set
    specialist: bool = False  # also train one model per task alone, for retention against it
    mode: str = "supervised"  # control: "supervised" (behaviour cloning) or "rl" (an agent: see `agent`)
    rl_steps: int = 50_000  # rl: environment steps per task
    agent: str = "dqn"  # rl: "dqn" (double DQN) or "ppo"


@dataclass
class RunResult:
    """What a run gives back: its `record` (the JSON result: matrix, metrics, configuration, timings,
    versions) and what was trained, to save or to keep using."""

    record: dict[str, Any]
    learner: Learner
    stream: TaskStream
    network: NetworkSpec

    @property
    def model(self) -> ContinualClassifier:
        return self.learner.model  # type: ignore[return-value]

    @property
    def strategy(self) -> Strategy:
        return self.learner.strategy


def seeded(cfg: RunConfig) -> RunConfig:
    """The config as a run records it: its one seed passed down to the stream, the learner and the
    strategy, and the learner's optimizer and learning rate made concrete for the strategy."""
    cfg = replace(cfg, stream=replace(cfg.stream, seed=cfg.seed), learner=replace(cfg.learner, seed=cfg.seed),
                  strategy_options={**cfg.strategy_options, "seed": cfg.seed})
    return replace(cfg, learner=cfg.learner.resolve(build_strategy(cfg.strategy, cfg.strategy_options)))


def build_learner(cfg: RunConfig, stream: TaskStream, progress: bool = False,
                  log: Log | None = None) -> tuple[Learner, NetworkSpec]:
    """A fresh model for the stream (seeded), the strategy, and the loop that trains them."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, network = model_for(stream, cfg.model)
    strategy = build_strategy(cfg.strategy, cfg.strategy_options)
    if cfg.learner.device != "cpu" and (cfg.mode == "rl" or any(t.evaluator is not None for t in stream)):
        raise ValueError("--device: control tasks (agents and tasks scored by their own evaluator) run on the CPU "
                         "only; leave --device at cpu")
    if cfg.mode == "rl":
        if cfg.agent not in ("dqn", "ppo"):
            raise ValueError(f"agent must be 'dqn' or 'ppo', not {cfg.agent!r}")
        from lifelong.agents import DQNAgent, DQNConfig, PPOAgent, PPOConfig
        from lifelong.data.control import observation_size

        if cfg.agent == "ppo":
            return PPOAgent(model, strategy, len(stream), observation_size(stream), cfg.model.hidden,
                            PPOConfig(steps=cfg.rl_steps, seed=cfg.seed), progress), network
        return DQNAgent(model, strategy, DQNConfig(steps=cfg.rl_steps, seed=cfg.seed), progress), network
    return Learner(model, strategy, cfg.learner, progress=progress, log=log), network


def learn_task(learner: Learner, stream: TaskStream, task_id: int, matrix: AccuracyMatrix, split: str = "test",
               log: Log | None = None) -> dict[str, Any]:
    """Train on one task, then score every task into the matrix's row; returns the task's statistics."""
    stats = learner.fit(stream, task_id)
    start = time.perf_counter()
    accuracies, stats["recency_bias"] = learner.evaluate_details(stream, split)
    matrix.update(task_id, accuracies)
    if log is not None:
        log({"task": task_id, "step": learner.step, "accuracy": accuracies})
    stats["eval_seconds"] = time.perf_counter() - start
    with torch.no_grad():
        stats["penalty"] = float(learner.strategy.penalty(learner.model))
    stats["importance_histograms"] = importance_histograms(learner.strategy)
    stats["protection"] = protection(learner.strategy)  # per layer, what kfac-ewc / gpm keep (empty for others)
    return stats


def run(cfg: RunConfig, progress: bool = False, stream: TaskStream | None = None, checkpoint_dir: str | None = None,
        resume: bool = False, log: Log | None = None) -> RunResult:
    """Learn the stream task by task, evaluating every task after each.

    `checkpoint_dir`: save the progress after each task there; `resume`: continue from it (the
    learner's own state, the matrix and the statistics so far). `log`: called with each training
    step's record and, after each task, with ``{"task", "step", "accuracy": [per task]}``."""
    cfg = seeded(cfg)
    started = time.perf_counter()
    whole_model_before = Counter(WHOLE_MODEL_FALLBACKS)
    stream = stream if stream is not None else build_stream(cfg.stream)
    learner, network = build_learner(cfg, stream, progress, log)
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resuming needs the checkpoint directory")
        saved = load_progress(checkpoint_dir, cfg.to_dict())
        learner.load_state_dict(saved["learner"])
        matrix, per_task = AccuracyMatrix.from_list(saved["matrix"], saved["baseline"]), saved["per_task"]
    else:
        baseline = [learner.task_accuracy(stream, j, cfg.eval_split, position=j) for j in range(len(stream))]
        matrix, per_task = AccuracyMatrix(len(stream), baseline), []
    for i in _progress(range(len(per_task), len(stream)), progress, f"{cfg.strategy} on {stream.name}"):
        per_task.append(learn_task(learner, stream, i, matrix, cfg.eval_split, log))
        if checkpoint_dir is not None:
            save_progress(checkpoint_dir, {"config": cfg.to_dict(), "task": i, "learner": learner.state_dict(),
                                           "baseline": matrix.baseline, "per_task": per_task,
                                           "matrix": matrix.tolist()})
    specialist = _specialist_accuracy(stream, cfg) if cfg.specialist else None
    record = result_record(cfg, stream, learner, matrix, per_task, specialist, time.perf_counter() - started)
    record["importance_fallbacks"] = {**fallbacks(learner.model),
                                      "whole_model_batches": dict(WHOLE_MODEL_FALLBACKS - whole_model_before)}
    return RunResult(record, learner, stream, network)


def _progress(tasks: range, progress: bool, desc: str) -> Iterable[int]:
    if not progress:
        return tasks
    from tqdm.auto import tqdm

    return tqdm(tasks, desc=desc, unit="task")


def _specialist_accuracy(stream: TaskStream, cfg: RunConfig) -> list[float]:
    """Accuracy of a fresh model trained on each task alone (same model, optimizer and epochs)."""
    out = []
    for task in stream:
        alone = TaskStream([replace(task, id=0)], stream.num_classes, "task", input=stream.input,
                           returns=stream.returns)
        learner, _ = build_learner(replace(cfg, strategy="naive", strategy_options={}, mode="supervised"), alone)
        learner.fit(alone, 0)
        out.append(learner.evaluate(alone, cfg.eval_split)[0])
    return out


def result_record(cfg: RunConfig, stream: TaskStream, learner: Learner, matrix: AccuracyMatrix,
                  per_task: list[dict[str, Any]], specialist: list[float] | None, seconds: float) -> dict[str, Any]:
    """The run's JSON result. Control streams score returns: the raw ones are kept, and the matrix and
    its metrics use returns normalised by the random and expert returns."""
    extra: dict[str, Any] = {}
    baseline = matrix.baseline
    if stream.returns is not None:
        from lifelong.data.control import normalise

        rand, expert = stream.returns.random, stream.returns.expert
        extra = {"return_matrix": matrix.tolist(), "baseline_return": baseline, "random_return": rand,
                 "expert_return": expert}
        baseline = normalise([baseline], rand, expert)[0] if baseline is not None else None
        matrix = AccuracyMatrix.from_list(normalise(matrix.values.tolist(), rand, expert), baseline)
    model, strategy = learner.model, learner.strategy
    return {
        **extra,
        "config": cfg.to_dict(),
        "strategy_config": strategy_config(strategy),
        "strategy": strategy.name,
        "benchmark": stream.name,
        "scenario": stream.scenario,
        "eval_split": cfg.eval_split,
        "tasks": [{"id": t.id, "name": t.name, "classes": list(t.classes), "train_size": len(t.train),
                   "eval_size": None if t.evaluator else len(t.eval_data(cfg.eval_split))} for t in stream],
        "accuracy_matrix": matrix.tolist(),
        "baseline_accuracy": baseline,
        "specialist_accuracy": specialist,
        **matrix.compute(specialist, forward_transfer=stream.scenario != "class"),
        "per_task": per_task,
        "seconds": seconds,
        "train_seconds": sum(s["train_seconds"] + s["after_task_seconds"] for s in per_task),
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_bytes": state_nbytes(strategy.state_dict()),
        "local_parameters": local_numel(model),
        "consolidation_bytes": consolidation_bytes(strategy),
        "recency_bias": per_task[-1]["recency_bias"] if per_task else None,
        "device": str(getattr(learner, "device", "cpu")),
        "environment": environment(),
    }
