"""Control tasks from gymnasium as a task stream.

Each task is an environment (any gymnasium id with a discrete action space). Observations are
zero-padded to one size; every task has its own actions in the global label space (task-IL: one
action head per task) or all tasks share one (domain-IL: one environment whose dynamics change).

A task's training data are expert demonstrations (behaviour cloning); its score is not an accuracy
but the mean return of the greedy policy over seeded evaluation episodes (`Task.evaluator`).
Returns are normalised per task as (return - random policy's) / (expert's - random policy's), so
0 is random and 1 is the expert; retention, R[T-1][j] / R[j][j], is then the issue's
(return - random) / (return right after training - random).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong.data.task import ArrayDataset, InputSpec, ReturnScale, Task, TaskStream

Expert = Callable[[Any, np.ndarray], int]


def cartpole_expert(env: Any, obs: np.ndarray) -> int:
    """A PD controller on the pole angle, with a little cart-position feedback."""
    x, x_dot, theta, theta_dot = obs[:4]
    return int(10 * theta + 2 * theta_dot + 0.1 * x + 0.5 * x_dot > 0)


def acrobot_expert(env: Any, obs: np.ndarray) -> int:
    """Energy pumping: torque along the second joint's velocity (about -85 per episode)."""
    return 2 if obs[5] > 0 else 0


def lunar_lander_expert(env: Any, obs: np.ndarray) -> int:
    """gymnasium's own heuristic lander (about +260 per episode)."""
    from gymnasium.envs.box2d.lunar_lander import heuristic

    return int(heuristic(env, obs))


EXPERTS: dict[str, Expert] = {"CartPole-v1": cartpole_expert, "Acrobot-v1": acrobot_expert,
                              "LunarLander-v3": lunar_lander_expert}


@dataclass(frozen=True)
class EnvSpec:
    """An environment to make: a gymnasium id, keyword arguments, attributes to set on it after
    making (CartPole's pole `length`, say), and optionally a rewiring of its sensors: the agent sees
    observation channel `sensor_order[i]` times `sensor_signs[i]` at position i (the expert still
    acts on the true observation)."""

    env_id: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    attributes: tuple[tuple[str, Any], ...] = ()
    name: str = ""
    sensor_order: tuple[int, ...] = ()
    sensor_signs: tuple[float, ...] = ()

    def sense(self, obs: np.ndarray) -> np.ndarray:
        if not self.sensor_order:
            return obs
        return obs[list(self.sensor_order)] * np.asarray(self.sensor_signs, dtype=obs.dtype)

    def make(self):
        import gymnasium as gym

        env = gym.make(self.env_id, **dict(self.kwargs))
        for key, value in self.attributes:
            setattr(env.unwrapped, key, value)
        return env

    @property
    def label(self) -> str:
        return self.name or self.env_id


def pad(obs: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    out[: len(obs)] = obs
    return out


def play(spec: EnvSpec, policy: Callable[[Any, np.ndarray], int], episodes: int, seed: int,
         record: int | None = None, sensed: bool = True) -> tuple[list[float], list[np.ndarray], list[int]]:
    """Run `episodes` seeded episodes; returns, and (when `record` is the padded size) the
    observations the agent senses and the actions taken. `sensed=False`: the policy acts on the
    true observation (an expert), else on what the agent senses."""
    env = spec.make()
    returns, observations, actions = [], [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            env.action_space.seed(seed + episode)
            total, done = 0.0, False
            while not done:
                seen = spec.sense(obs)
                action = policy(env, seen if sensed else obs)
                if record is not None:
                    observations.append(pad(seen, record))
                    actions.append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns, observations, actions


@dataclass
class ReturnEvaluator:
    """Scores a model on a task by the mean return of its greedy policy (seeded episodes)."""

    spec: EnvSpec
    episodes: int
    seed: int
    obs_size: int
    offset: int  # the task's first action in the global label space
    returns: list[float] = field(default_factory=list)

    def policy(self, model: nn.Module, task_id: int) -> Callable[[Any, np.ndarray], int]:
        task = torch.tensor([task_id])

        def act(env: Any, obs: np.ndarray) -> int:
            with torch.no_grad():
                logits = model(torch.from_numpy(pad(obs, self.obs_size)).unsqueeze(0), task)
            return int(logits.argmax(-1)) - self.offset

        return act

    def __call__(self, model: nn.Module, task_id: int, split: str = "test") -> float:
        # Validation episodes (for tuning) use other seeds than the test episodes reported.
        seed = self.seed + (500_000 if split == "valid" else 0)
        self.returns, _, _ = play(self.spec, self.policy(model, task_id), self.episodes, seed)
        return float(np.mean(self.returns))


def _n_actions(spec: EnvSpec) -> int:
    env = spec.make()
    try:
        n = getattr(env.action_space, "n", None)
        if n is None:
            raise ValueError(f"{spec.env_id} has no discrete action space; lifelong's control tasks need one")
        return int(n)
    finally:
        env.close()


def _obs_size(spec: EnvSpec) -> int:
    env = spec.make()
    try:
        return math.prod(env.observation_space.shape or (0,))
    finally:
        env.close()


def control_stream(specs: Sequence[EnvSpec], scenario: str = "task", demo_episodes: int = 20,
                   eval_episodes: int = 20, seed: int = 0, experts: dict[str, Expert] | None = None,
                   name: str = "control") -> TaskStream:
    """One task per environment, with expert demonstrations to clone (none for reinforcement
    learning: `demo_episodes=0`). The expert's and a uniformly random policy's returns on the
    evaluation episodes normalise the scores."""
    if scenario not in ("task", "domain"):
        raise ValueError(f"control streams are task- or domain-incremental, not {scenario!r}")
    experts = {**EXPERTS, **(experts or {})}
    obs_size = max(_obs_size(s) for s in specs)
    sizes = [_n_actions(s) for s in specs]
    if scenario == "domain" and len(set(sizes)) > 1:
        raise ValueError("a domain-incremental stream needs one action space for every task")
    offsets = [sum(sizes[:k]) for k in range(len(specs))] if scenario == "task" else [0] * len(specs)
    tasks, random_returns, expert_returns = [], [], []
    for k, spec in enumerate(specs):
        if spec.env_id not in experts:
            raise ValueError(f"no expert for {spec.env_id}; pass one in `experts` (known: {sorted(experts)})")
        expert = experts[spec.env_id]
        demo_seed, eval_seed = seed * 10_000 + 100 * k, 1_000_000 + 100 * k

        def act(env, o, e=expert):
            return e(env.unwrapped, o)

        _, obs, actions = play(spec, act, demo_episodes, demo_seed, record=obs_size, sensed=False)
        x = torch.from_numpy(np.stack(obs)) if obs else torch.zeros(0, obs_size)
        data = ArrayDataset(x, torch.tensor(actions, dtype=torch.long) + offsets[k])
        evaluator = ReturnEvaluator(spec, eval_episodes, eval_seed, obs_size, offsets[k])
        expert_ret, _, _ = play(spec, act, eval_episodes, eval_seed, sensed=False)
        rand, _, _ = play(spec, lambda env, o: int(env.action_space.sample()), eval_episodes, eval_seed)
        classes = tuple(range(offsets[k], offsets[k] + sizes[k]))
        tasks.append(Task(k, data, None, classes, spec.label, evaluator=evaluator))
        random_returns.append(float(np.mean(rand)))
        expert_returns.append(float(np.mean(expert_ret)))
    num_classes = sum(sizes) if scenario == "task" else sizes[0]
    return TaskStream(tasks, num_classes, scenario, name, None, InputSpec("control", (obs_size,)),
                      ReturnScale(random_returns, expert_returns))


def normalise(returns: Sequence[Sequence[float]], random: Sequence[float],
              expert: Sequence[float]) -> list[list[float]]:
    """(return - random) / (expert - random), per task (column)."""
    return [[(r - random[j]) / (expert[j] - random[j]) for j, r in enumerate(row)] for row in returns]


DEFAULT_TASK_SEQUENCE = (EnvSpec("CartPole-v1"), EnvSpec("Acrobot-v1"), EnvSpec("LunarLander-v3"))


def rewired(spec: EnvSpec, seed: int, name: str) -> EnvSpec:
    """The same environment with its sensor channels permuted and sign-flipped by a seed."""
    rng = np.random.default_rng(seed)
    n = _obs_size(spec)
    return EnvSpec(spec.env_id, spec.kwargs, spec.attributes, name, tuple(int(i) for i in rng.permutation(n)),
                   tuple(float(v) for v in rng.choice([-1.0, 1.0], n)))


REWIRABLE = {"lander": "LunarLander-v3", "cartpole": "CartPole-v1", "acrobot": "Acrobot-v1"}


def rewired_sequence(short: str, num_tasks: int = 3) -> tuple[EnvSpec, ...]:
    """One environment seen through a differently wired sensor board in each task. The dynamics
    and the expert stay; what an input means changes, as pixels do in Permuted MNIST, so a network
    that fits the new wiring forgets the old one (naive BC keeps about 60 % on the lander)."""
    base = EnvSpec(REWIRABLE[short], name=f"{short}, wiring 0")
    return (base, *(rewired(base, 100 + k, f"{short}, wiring {k}") for k in range(1, num_tasks)))


def observation_size(stream: TaskStream) -> int:
    """The padded observation width a control stream's policies take."""
    if stream.input is None or stream.input.kind != "control":
        raise ValueError(f"{stream.name} is not a control stream")
    return int(stream.input.shape[0])
