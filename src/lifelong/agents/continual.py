"""One continual reinforcement-learning run: an agent learns a sequence of control tasks in turn
and is scored on every task after each, by normalised return, with curves of return over time.

The result has the shape of a supervised run's (`accuracy_matrix`, `average_accuracy`,
`learning_accuracy`, `average_retention`, ...), where R[i][j] is task j's normalised return
(return - random policy's) / (expert's - random policy's) after training through task i, plus
`return_matrix` (raw returns), `curve` (every task's return every `curve_every` steps, for the
return-per-task-over-time figure) and `timing` (update, penalty and importance costs).

`strategy="multitask"` is the upper bound: one agent learns every environment at once, for as many
steps as the whole sequence, and only its final row is scored.

>>> cfg = RLRunConfig("cartpole-rewired", tasks=2, steps=2048, eval_episodes=1, curve_every=0,
...                   agent_options={"envs": 4, "rollout": 64})
>>> r = run_rl(cfg)
>>> len(r["accuracy_matrix"]), sorted(r["timing"])[:2]
(2, ['after_backward_seconds', 'extra_loss_seconds'])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lifelong.agents.ppo import PPOAgent, PPOConfig
from lifelong.data.control import EnvSpec, control_stream, normalise, observation_size, play, rewired_sequence
from lifelong.data.task import TaskStream
from lifelong.evaluation.matrix import AccuracyMatrix
from lifelong.models.control import TaskInputMLP
from lifelong.models.heads import ContinualClassifier
from lifelong.models.mlp import MLP
from lifelong.reporting.importance import consolidation_bytes
from lifelong.strategies import build_strategy
from lifelong.strategies.base import state_nbytes


def _cartpole(name: str, **attributes: float) -> EnvSpec:
    return EnvSpec("CartPole-v1", attributes=tuple(attributes.items()), name=name)


def _wiring(short: str, k: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Task k's sensor board in rewired_sequence (k = 0: as built)."""
    spec = rewired_sequence(short, k + 1)[k]
    return spec.sensor_order, spec.sensor_signs


SEQUENCES: dict[str, Callable[[int], tuple[EnvSpec, ...]]] = {
    # one environment through a differently wired sensor board per task (rewired_sequence)
    "cartpole-rewired": lambda n: rewired_sequence("cartpole", n),
    "acrobot-rewired": lambda n: rewired_sequence("acrobot", n),
    "lander-rewired": lambda n: rewired_sequence("lander", n),
    # CartPole with changed dynamics: the pole's half-length (m) and the push's force (N)
    "cartpole-dynamics": lambda n: (
        _cartpole("cartpole, pole 0.5 m"),
        _cartpole("cartpole, pole 1.0 m", length=1.0, polemass_length=0.1),
        _cartpole("cartpole, pole 0.2 m, force 5 N", length=0.2, polemass_length=0.02, force_mag=5.0),
    )[:n],
    # both: each task another pole and force, seen through another sensor board
    "cartpole-dynamics-rewired": lambda n: tuple(
        EnvSpec(s.env_id, s.kwargs, s.attributes, f"{s.label}, wiring {k}", *_wiring("cartpole", k))
        for k, s in enumerate(SEQUENCES["cartpole-dynamics"](n))),
    # different environments, observations zero-padded to the largest
    "cartpole-acrobot": lambda n: (EnvSpec("CartPole-v1"), EnvSpec("Acrobot-v1"),
                                   rewired_sequence("cartpole", 2)[1], rewired_sequence("acrobot", 2)[1])[:n],
}


@dataclass
class RLRunConfig:
    """Everything that decides a continual RL run; written into its result."""

    sequence: str = "cartpole-rewired"  # a name in SEQUENCES
    tasks: int = 3
    strategy: str = "naive"  # a registered strategy, or "multitask" (every environment at once)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 100_000  # environment steps per task
    agent: str = "ppo"
    agent_options: dict[str, Any] = field(default_factory=dict)  # PPOConfig fields
    hidden: tuple[int, ...] = (64, 64)
    policy_input: str = "per-task"  # "per-task": one input layer per task (models/control.py); "shared": one MLP
    seed: int = 0
    eval_split: str = "test"  # "valid": other evaluation episodes, for tuning
    eval_episodes: int = 20  # episodes per task in each row of the matrix
    curve_every: int = 10_000  # environment steps between points of the curves (0: none)
    curve_episodes: int = 5

    def __post_init__(self) -> None:
        if self.sequence not in SEQUENCES:
            raise ValueError(f"unknown sequence {self.sequence!r}; choose one of {', '.join(SEQUENCES)}")
        if self.agent != "ppo":
            raise ValueError(f"run_rl drives the PPO agent; {self.agent!r} runs through lifelong.run (mode 'rl')")
        if self.eval_split not in ("test", "valid"):
            raise ValueError(f"eval_split must be 'test' or 'valid', not {self.eval_split!r}")
        if self.policy_input not in ("per-task", "shared"):
            raise ValueError(f"policy_input must be 'per-task' or 'shared', not {self.policy_input!r}")
        if self.tasks < 2 or self.steps < 1 or self.eval_episodes < 1:
            raise ValueError("need at least 2 tasks, steps >= 1 and eval_episodes >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_rl_stream(cfg: RLRunConfig) -> TaskStream:
    """The task stream of a sequence (expert and random returns measured on the test episodes)."""
    specs = SEQUENCES[cfg.sequence](cfg.tasks)
    if len(specs) < cfg.tasks:
        raise ValueError(f"sequence {cfg.sequence!r} has {len(specs)} tasks, not {cfg.tasks}")
    return control_stream(specs, "task", demo_episodes=0, eval_episodes=cfg.eval_episodes, name=cfg.sequence)


def _references(stream: TaskStream) -> tuple[list[float], list[float]]:
    """(random policy's, expert's) mean return per task."""
    assert stream.returns is not None, "a control stream carries its return scale"
    return list(stream.returns.random), list(stream.returns.expert)


def _scores(agent: PPOAgent, stream: TaskStream, split: str, episodes: int) -> list[float]:
    """Mean greedy return on every task over `episodes` seeded episodes of the split."""
    model = agent.model
    was_training = model.training
    model.eval()
    try:
        out = []
        for task in stream:
            ev = task.evaluator
            seed = ev.seed + (500_000 if split == "valid" else 0)  # type: ignore[union-attr]
            returns, _, _ = play(ev.spec, ev.policy(model, task.id), episodes, seed)  # type: ignore[union-attr]
            out.append(float(np.mean(returns)))
        return out
    finally:
        model.train(was_training)


def run_rl(cfg: RLRunConfig, stream: TaskStream | None = None,
           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Learn the sequence task by task (or all at once: multitask); return the result dict."""
    started = time.perf_counter()
    stream = stream if stream is not None else build_rl_stream(cfg)
    num_tasks, obs_size = len(stream), observation_size(stream)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    net: torch.nn.Module = (TaskInputMLP(num_tasks, obs_size, cfg.hidden, stream.num_classes)
                            if cfg.policy_input == "per-task" else MLP(obs_size, cfg.hidden, stream.num_classes))
    model = ContinualClassifier(net, num_tasks, stream.num_classes)
    multitask = cfg.strategy == "multitask"
    strategy = build_strategy("naive" if multitask else cfg.strategy, {**cfg.strategy_options, "seed": cfg.seed})
    agent = PPOAgent(model, strategy, num_tasks, obs_size, cfg.hidden,
                     PPOConfig(**{"steps": cfg.steps, **cfg.agent_options, "seed": cfg.seed}))
    rand, expert = _references(stream)
    curve: list[dict[str, Any]] = []
    training = [0]

    def monitor(step: int) -> None:
        returns = _scores(agent, stream, cfg.eval_split, cfg.curve_episodes)
        curve.append({"step": step, "training": training[0], "returns": returns,
                      "normalised": normalise([returns], rand, expert)[0]})

    agent.monitor, agent.monitor_every = (monitor, cfg.curve_every) if cfg.curve_every else (None, 0)
    rows: list[list[float]] = []
    per_task = []
    if multitask:
        training[0] = -1
        stats = agent.fit_tasks(stream, list(range(num_tasks)), cfg.steps * num_tasks)
        per_task.append(stats)
        rows.append(_scores(agent, stream, cfg.eval_split, cfg.eval_episodes))
    else:
        for i in range(num_tasks):
            training[0] = i
            stats = agent.fit(stream, i)
            rows.append(_scores(agent, stream, cfg.eval_split, cfg.eval_episodes))
            stats["returns"] = rows[-1]
            per_task.append(stats)
            if log is not None:
                log(f"task {i}: returns {[round(r, 1) for r in rows[-1]]} ({time.perf_counter() - started:.0f} s)")
    normalised = normalise(rows, rand, expert)
    if multitask:
        metrics: dict[str, Any] = {"average_accuracy": float(np.mean(normalised[-1])), "learning_accuracy": None,
                                   "average_retention": None}
    else:
        metrics = AccuracyMatrix.from_list(normalised).compute()
    timing = dict(agent.timing)
    timing["train_seconds"] = sum(s["train_seconds"] for s in per_task)
    timing["importance_seconds"] = sum(s["after_task_seconds"] for s in per_task)
    stored = getattr(strategy, "stored_bytes", None)
    return {
        "config": cfg.to_dict(),
        "strategy": cfg.strategy,
        "benchmark": f"control-rl-{cfg.sequence}",
        "scenario": "task",  # every task has its own actions; the policy sees no task id when `policy_input` is shared
        "tasks": [{"id": t.id, "name": t.name, "actions": list(t.classes)} for t in stream],
        "random_return": rand,
        "expert_return": expert,
        "return_matrix": rows,
        "accuracy_matrix": normalised,
        **metrics,
        "curve": curve,
        "per_task": per_task,
        "timing": timing,
        "seconds": time.perf_counter() - started,
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_bytes": state_nbytes(strategy.state_dict()),
        "consolidation_bytes": consolidation_bytes(strategy),
        "stored_bytes": stored() if callable(stored) else 0,
    }
