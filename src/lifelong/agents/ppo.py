"""Proximal policy optimisation that learns control tasks one after another, through lifelong's
strategy hooks (Schulman et al. 2017: clipped surrogate objective; advantages by GAE, Schulman et
al. 2016; a categorical policy over the task's own actions).

The model the strategies see is the policy alone (`ContinualClassifier` over a per-task input layer,
a shared trunk and one action head per task, `models/control.py`): the policy is what the agent
does, so it is what consolidation protects. The value function is a separate network (a per-task
input layer, a trunk and one value output per task) that no strategy touches; it only serves the
task being learned, and an old task's values need not be kept to act on it.

Hooks in every update: `extend_batch` (stored states joined to the PPO mini-batch, with a
behaviour-cloning term on them), `extra_loss` (functional consolidation), then backward,
`after_backward` (the quadratic penalty's gradient), the gradient clipping over that total, the
optimizer step and `after_step`. After a task, `after_task` gets visited states.

Importance (one definition, documented and tested): the Fisher information of the policy
distribution at states the agent visited on the task, F = E_s sum_a pi(a|s) (d log pi(a|s))^2.
The states handed to `after_task` are labelled with actions drawn from pi(.|s) (one draw per
state), so EWC's default `fisher="empirical"` is a one-sample estimate of F, and `fisher="exact"`
(what the benchmark uses) is F itself, the expectation over the task's actions in closed form.
Unlike a Fisher of softmax(Q) it does not depend on reward units.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.control import pad
from lifelong.data.task import ArrayDataset, Batch, BatchLoader, TaskData, TaskStream
from lifelong.learner import Learner, LearnerConfig
from lifelong.models.control import TaskInputMLP
from lifelong.strategies.base import Strategy


@dataclass
class PPOConfig:
    steps: int = 100_000  # environment steps per task
    envs: int = 8  # environments stepped together (one rollout holds envs * rollout steps)
    rollout: int = 128  # steps per environment between updates
    epochs: int = 4  # passes over each rollout
    minibatch: int = 256
    lr: float = 1e-3  # Adam, decayed linearly to 0 over each task
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2  # the surrogate's ratio clip
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5  # clips the policy's total gradient (PPO loss + consolidation) and the critic's
    clone_coef: float = 1.0  # weight of the behaviour-cloning term on states a replay strategy appends
    importance_states: int = 2_000  # visited states handed to after_task (importance, stored states)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.envs, self.rollout, self.epochs, self.minibatch) < 1:
            raise ValueError("steps, envs, rollout, epochs and minibatch must be >= 1")
        if self.lr <= 0 or not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1 or self.clip <= 0:
            raise ValueError("need lr > 0, 0 < gamma <= 1, 0 <= gae_lambda <= 1 and clip > 0")


def masked_log_policy(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(log pi over the whole label space with -inf off the task's actions, entropy per sample)."""
    logp = torch.log_softmax(logits, -1)
    live = torch.isfinite(logits)
    entropy = -(logp.exp() * torch.where(live, logp, 0.0)).sum(-1)
    return logp, entropy


def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float,
        lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and returns for [T, N] rollouts; `dones[t]` ends the episode
    after step t (a truncated episode's bootstrap is already folded into its reward)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(len(rewards))):
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * alive - values[t]
        running = delta + gamma * lam * alive * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


class PPOAgent(Learner):
    """A `Learner` whose `fit` interacts with the task's environments instead of reading a dataset.

    `evaluate` is the learner's own (the tasks' evaluators run the greedy policy: the mode of pi).
    `monitor(step)`, when set, is called every `monitor_every` environment steps (curves of return
    over time).
    """

    def __init__(self, model: nn.Module, strategy: Strategy, num_tasks: int, obs_size: int,
                 hidden: Sequence[int] = (64, 64), config: PPOConfig | None = None, progress: bool = False):
        self.ppo = config or PPOConfig()
        super().__init__(model, strategy, LearnerConfig(lr=self.ppo.lr, seed=self.ppo.seed), progress)
        with torch.random.fork_rng():  # the critic's initialisation from its own seed, leaving the global stream
            torch.manual_seed(self.ppo.seed + 7)
            self.critic = TaskInputMLP(num_tasks, obs_size, hidden, num_tasks)
        self.sampler = torch.Generator().manual_seed(self.ppo.seed)
        self.monitor: Callable[[int], None] | None = None
        self.monitor_every = 0
        self.env_steps = 0
        self.timing = {"updates": 0, "update_seconds": 0.0, "after_backward_seconds": 0.0,
                       "extra_loss_seconds": 0.0}

    # -- acting --------------------------------------------------------------------------------------
    def _value(self, obs: Tensor, task: Tensor) -> Tensor:
        return self.critic(obs, task).gather(1, task.unsqueeze(1)).squeeze(1)

    def fit(self, stream: TaskStream, task_id: int) -> dict[str, Any]:
        """Learn task `task_id` for `steps` environment steps; returns its training statistics."""
        return self.fit_tasks(stream, [task_id], self.ppo.steps)

    def fit_tasks(self, stream: TaskStream, task_ids: Sequence[int], steps: int) -> dict[str, Any]:
        """Learn several tasks at once (the multi-task upper bound: the environments are dealt
        round-robin to the parallel slots), or one. Strategy hooks see the last task id."""
        cfg, model, strategy = self.ppo, self.model, self.strategy
        tasks = [stream[t] for t in task_ids]
        evaluators = [t.evaluator for t in tasks]
        if any(e is None or not hasattr(e, "spec") for e in evaluators):
            raise ValueError("a PPO agent learns control tasks (built by lifelong.data.control)")
        if cfg.envs < len(task_ids):
            raise ValueError(f"{len(task_ids)} tasks at once need at least as many environments, not {cfg.envs}")
        current = task_ids[-1]
        obs_size = evaluators[0].obs_size
        self._set_position(stream, current)
        strategy.before_task(model, current)
        policy_params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam([{"params": policy_params}, {"params": list(self.critic.parameters())}],
                                          lr=cfg.lr, eps=1e-5)
        slot_task = [task_ids[k % len(task_ids)] for k in range(cfg.envs)]
        specs = [stream[t].evaluator.spec for t in slot_task]
        offsets = [stream[t].evaluator.offset for t in slot_task]
        envs = [s.make() for s in specs]
        base = cfg.seed * 100_000 + current * 1_000
        obs = np.stack([pad(s.sense(e.reset(seed=base + k)[0]), obs_size)
                        for k, (s, e) in enumerate(zip(specs, envs, strict=True))])
        task = torch.tensor(slot_task)
        n, horizon = cfg.envs, cfg.rollout
        batches = max(1, steps // (n * horizon))
        buf_obs = torch.zeros(horizon, n, obs_size)
        buf_act = torch.zeros(horizon, n, dtype=torch.long)
        buf_logp, buf_val, buf_rew, buf_done = (torch.zeros(horizon, n) for _ in range(4))
        returns: list[float] = []
        episode = np.zeros(n)
        visited: list[np.ndarray] = []
        keep_every = max(1, batches * horizon * n // (4 * cfg.importance_states))
        start, losses = time.perf_counter(), []
        model.train()
        for b in range(batches):
            frac = 1.0 - b / batches
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * frac
            for t in range(horizon):
                x = torch.from_numpy(obs)
                with torch.no_grad():
                    logp_all, _ = masked_log_policy(model(x, task))
                    action = torch.multinomial(logp_all.exp(), 1, generator=self.sampler).squeeze(1)
                    value = self._value(x, task)
                buf_obs[t], buf_act[t], buf_val[t] = x, action, value
                buf_logp[t] = logp_all.gather(1, action.unsqueeze(1)).squeeze(1)
                next_obs, truncated_at = [], []
                for k, env in enumerate(envs):
                    raw, reward, terminated, truncated, _ = env.step(int(action[k]) - offsets[k])
                    episode[k] += reward
                    buf_rew[t, k], buf_done[t, k] = float(reward), float(terminated or truncated)
                    seen = pad(specs[k].sense(raw), obs_size)
                    if truncated and not terminated:
                        truncated_at.append((k, seen))
                    if terminated or truncated:
                        returns.append(float(episode[k]))
                        episode[k] = 0.0
                        seen = pad(specs[k].sense(env.reset()[0]), obs_size)
                    next_obs.append(seen)
                if truncated_at:  # a time limit is not a terminal state: bootstrap its value
                    ks = [k for k, _ in truncated_at]
                    with torch.no_grad():
                        tail = self._value(torch.from_numpy(np.stack([o for _, o in truncated_at])), task[ks])
                    buf_rew[t, ks] += cfg.gamma * tail
                obs = np.stack(next_obs)
                self.env_steps += n
                if (b * horizon + t) % keep_every == 0:
                    visited.append(obs.copy())
                if self.monitor is not None and self.monitor_every and self.env_steps % self.monitor_every < n:
                    self.monitor(self.env_steps)
            with torch.no_grad():
                last = self._value(torch.from_numpy(obs), task)
            adv, ret = gae(buf_rew, buf_val, buf_done, last, cfg.gamma, cfg.gae_lambda)
            losses.extend(self._update(buf_obs.flatten(0, 1), buf_act.flatten(), buf_logp.flatten(),
                                       adv.flatten(), ret.flatten(), task.repeat(horizon), policy_params))
        for env in envs:
            env.close()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        strategy.after_task(model, current, self._visited_batches(visited, slot_task, current))
        return {"task": current, "steps": batches * horizon * n, "loss": float(np.mean(losses)),
                "train_seconds": train_seconds, "after_task_seconds": time.perf_counter() - start,
                "training_episodes": len(returns),
                "last_training_returns": float(np.mean(returns[-20:])) if returns else float("nan")}

    # -- learning ------------------------------------------------------------------------------------
    def _update(self, obs: Tensor, act: Tensor, old_logp: Tensor, adv: Tensor, ret: Tensor, task: Tensor,
                policy_params: list[nn.Parameter]) -> list[float]:
        cfg, model, strategy, optimizer = self.ppo, self.model, self.strategy, self.optimizer
        assert optimizer is not None, "fit_tasks creates the optimizer"
        losses = []
        size = len(act)
        for _ in range(cfg.epochs):
            order = torch.randperm(size, generator=self.sampler)
            for s in range(0, size, cfg.minibatch):
                idx = order[s: s + cfg.minibatch]
                began = time.perf_counter()
                new = len(idx)
                batch = strategy.extend_batch(Batch(obs[idx], act[idx], task[idx]))
                logits = model(batch.x, batch.task)
                logp_all, entropy = masked_log_policy(logits[:new])
                logp = logp_all.gather(1, act[idx].unsqueeze(1)).squeeze(1)
                a = adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8) if new > 1 else a
                ratio = (logp - old_logp[idx]).exp()
                surrogate = torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a)
                value = self._value(obs[idx], task[idx])
                loss = -surrogate.mean() - cfg.entropy_coef * entropy.mean() \
                    + cfg.value_coef * F.mse_loss(value, ret[idx])
                if len(batch.y) > new:  # stored states of earlier tasks (replay): clone their stored actions
                    loss = loss + cfg.clone_coef * F.cross_entropy(logits[new:], batch.y[new:])
                t0 = time.perf_counter()
                extra = strategy.extra_loss(model, batch, logits)
                self.timing["extra_loss_seconds"] += time.perf_counter() - t0
                if extra is not None:
                    loss = loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t0 = time.perf_counter()
                strategy.after_backward(model)  # the penalty's gradient first: the clip covers the total
                self.timing["after_backward_seconds"] += time.perf_counter() - t0
                nn.utils.clip_grad_norm_(policy_params, cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                optimizer.step()
                strategy.after_step(model)
                self.step += 1
                self.timing["updates"] += 1
                self.timing["update_seconds"] += time.perf_counter() - began
                losses.append(float(loss.detach()))
        return losses

    @torch.no_grad()
    def _visited_batches(self, visited: list[np.ndarray], slot_task: list[int], current: int) -> BatchLoader:
        """Visited states of task `current`, each labelled with an action drawn from the policy
        there: the states importance is estimated on."""
        slots = [k for k, t in enumerate(slot_task) if t == current]
        states = np.concatenate([v[slots] for v in visited]) if visited else np.zeros((0, 1), np.float32)
        take = torch.randperm(len(states), generator=self.sampler)[: self.ppo.importance_states]
        x = torch.from_numpy(states[take.numpy()])
        task = torch.full((len(x),), current, dtype=torch.long)
        probs = masked_log_policy(self.model(x, task))[0].exp()
        labels = torch.multinomial(probs, 1, generator=self.sampler).squeeze(1)
        return BatchLoader([TaskData(ArrayDataset(x, labels), current)], 512)
