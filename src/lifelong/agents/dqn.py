"""Deep Q-learning that learns control tasks one after another, through lifelong's strategy hooks.

Why DQN rather than PPO: its replay buffer and its Q-network fit the strategy protocol unchanged.
Every update is one supervised-looking step on a mini-batch (a TD loss instead of cross-entropy),
so `after_backward` (consolidation's gradient) and `after_step` (SI's path integral) apply as they
are; the buffer provides the states importance is estimated on; discrete actions map onto lifelong's
masked heads. (Mnih et al. 2015, with double Q-learning, van Hasselt et al. 2016.)

Importance for a policy (one definition): the Fisher information of the Boltzmann policy
softmax(Q / tau) at states from the agent's own buffer, with tau set after each task to the mean
over those states of the standard deviation of Q across the task's actions. `after_task` sees the
model's masked Q-values divided by that tau (a forward hook, `tempered`), so EWC's
`fisher="exact"` is that Fisher in closed form (`"true"`: one action drawn from the policy per
state; `"empirical"`: the greedy actions the states are labelled with, which replay stores).
Why this one: it measures how much each weight moves the action choice, which is what must not
change (the TD loss's Fisher weights weights by value-prediction error instead, and vanishes once
TD errors do); and why this tau: Q-values scale with reward units, so softmax(Q) at a fixed
temperature is near-deterministic (Fisher ~ 0) on one task and near-uniform on another, while
softmax(Q / tau) is unchanged when rewards are rescaled, so one strength carries over between
tasks. (A Gaussian around the Q-values has the same unit problem, squared.)

The penalty's gradient is added before the TD gradient is clipped, so the clip (norm 10) bounds the
total step, as PPO's does.

Replay (`extend_batch`): stored (state, greedy action, task) samples of earlier tasks join each
update with a cross-entropy term on softmax(Q), a behaviour-cloning form of rehearsal as in CLEAR
(Rolnick et al. 2019): old Q-targets cannot be recomputed without the old environments' rewards.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from lifelong.config import Config
from lifelong.data.control import pad
from lifelong.data.task import ArrayDataset, Batch, BatchLoader, TaskData, TaskStream
from lifelong.learner import Learner, LearnerConfig
from lifelong.strategies.base import Strategy


@dataclass
class DQNConfig(Config):
    steps: int = 50_000  # environment steps per task
    buffer: int = 50_000
    batch_size: int = 64
    lr: float = 5e-4
    gamma: float = 0.99
    learning_starts: int = 1_000
    train_every: int = 1
    target_update: int = 500  # steps between copies of the online network into the target network
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_fraction: float = 0.3  # share of a task's steps over which epsilon decays
    importance_states: int = 2_000  # buffer states the importance is estimated on
    seed: int = 0


@contextmanager
def tempered(model: nn.Module, temperature: float) -> Iterator[None]:
    """Within the block, the model's outputs are divided by `temperature` (a forward hook)."""
    handle = model.register_forward_hook(lambda module, args, output: output / temperature)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def boltzmann_temperature(q: Tensor) -> float:
    """Mean over states of the standard deviation of Q across actions ([N, A] Q-values of one task):
    in reward units, so softmax(Q / tau) does not change when rewards are rescaled."""
    tau = float(q.std(dim=1, unbiased=False).mean()) if q.shape[1] > 1 else 1.0
    return tau if tau > 1e-8 else 1.0


class DQNAgent(Learner):
    """A `Learner` whose `fit` interacts with the task's environment instead of reading a dataset.

    `evaluate` is the learner's own (the tasks' evaluators run the greedy policy).
    """

    def __init__(self, model: nn.Module, strategy: Strategy, config: DQNConfig | None = None,
                 progress: bool = False):
        self.dqn = config or DQNConfig()
        super().__init__(model, strategy, LearnerConfig(lr=self.dqn.lr, seed=self.dqn.seed), progress)
        self.rng = np.random.default_rng(self.dqn.seed)

    def _q(self, net: nn.Module, obs: Tensor, task: Tensor, offset: int, n: int) -> Tensor:
        return net(obs, task)[:, offset: offset + n]

    def fit(self, stream: TaskStream, task_id: int) -> dict[str, Any]:
        cfg, model, strategy = self.dqn, self.model, self.strategy
        task = stream[task_id]
        evaluator = task.evaluator
        if evaluator is None or not hasattr(evaluator, "spec"):
            raise ValueError("a DQN agent learns control tasks (built by lifelong.data.control)")
        spec, obs_size, offset, n_actions = evaluator.spec, evaluator.obs_size, evaluator.offset, len(task.classes)
        self._set_position(stream, task_id)
        strategy.before_task(model, task_id)
        self.optimizer = self._new_optimizer()
        target = copy.deepcopy(model).eval()
        buf_obs = np.zeros((cfg.buffer, obs_size), np.float32)
        buf_next = np.zeros((cfg.buffer, obs_size), np.float32)
        buf_act = np.zeros(cfg.buffer, np.int64)
        buf_rew = np.zeros(cfg.buffer, np.float32)
        buf_done = np.zeros(cfg.buffer, np.float32)
        size = cursor = 0
        env = spec.make()
        obs, _ = env.reset(seed=cfg.seed * 1000 + task_id)
        env.action_space.seed(cfg.seed * 1000 + task_id)
        obs = pad(spec.sense(obs), obs_size)
        task_ids = torch.full((cfg.batch_size,), task_id, dtype=torch.long)
        start, losses, returns, episode_return = time.perf_counter(), [], [], 0.0
        bar = tqdm(total=cfg.steps, desc=f"task {task_id} (dqn)", leave=False, disable=not self.progress)
        for step in range(cfg.steps):
            decay = min(1.0, step / max(1, cfg.epsilon_fraction * cfg.steps))
            epsilon = cfg.epsilon_start + decay * (cfg.epsilon_end - cfg.epsilon_start)
            if self.rng.random() < epsilon:
                action = int(env.action_space.sample())
            else:
                with torch.no_grad():
                    q = self._q(model, torch.from_numpy(obs).unsqueeze(0), task_ids[:1], offset, n_actions)
                action = int(q.argmax())
            raw_next, reward, terminated, truncated, _ = env.step(action)
            next_obs = pad(spec.sense(raw_next), obs_size)
            buf_obs[cursor], buf_next[cursor], buf_act[cursor] = obs, next_obs, action
            buf_rew[cursor], buf_done[cursor] = reward, float(terminated)
            cursor, size = (cursor + 1) % cfg.buffer, min(size + 1, cfg.buffer)
            episode_return += float(reward)
            obs = next_obs
            if terminated or truncated:
                returns.append(episode_return)
                episode_return = 0.0
                raw, _ = env.reset()
                obs = pad(spec.sense(raw), obs_size)
            if step >= cfg.learning_starts and step % cfg.train_every == 0:
                idx = self.rng.integers(0, size, cfg.batch_size)
                losses.append(self._update(target, buf_obs[idx], buf_act[idx], buf_rew[idx], buf_next[idx],
                                           buf_done[idx], task_ids, offset, n_actions))
            if step % cfg.target_update == 0:
                target.load_state_dict(model.state_dict())
            bar.update()
        bar.close()
        env.close()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        states = self._buffer_batches(buf_obs[:size], task_id, offset, n_actions)
        with torch.no_grad():
            q = torch.cat([self._q(model, b.x, b.task, offset, n_actions) for b in states])
        temperature = boltzmann_temperature(q)
        with tempered(model, temperature):  # importance (and stored outputs) of the Boltzmann policy
            strategy.after_task(model, task_id, states)
        return {"task": task_id, "steps": cfg.steps, "loss": float(np.mean(losses)) if losses else float("nan"),
                "train_seconds": train_seconds, "after_task_seconds": time.perf_counter() - start,
                "temperature": temperature,
                "training_episodes": len(returns),
                "last_training_returns": float(np.mean(returns[-10:])) if returns else float("nan")}

    def _update(self, target: nn.Module, obs, act, rew, next_obs, done, task_ids: Tensor, offset: int,
                n_actions: int) -> float:
        cfg, model = self.dqn, self.model
        obs_t, next_t = torch.from_numpy(obs), torch.from_numpy(next_obs)
        with torch.no_grad():
            greedy = self._q(model, next_t, task_ids, offset, n_actions).argmax(1, keepdim=True)  # double DQN
            next_q = self._q(target, next_t, task_ids, offset, n_actions).gather(1, greedy).squeeze(1)
            td_target = torch.from_numpy(rew) + cfg.gamma * (1 - torch.from_numpy(done)) * next_q
            labels = self._q(model, obs_t, task_ids, offset, n_actions).argmax(1) + offset
        batch = self.strategy.extend_batch(Batch(obs_t, labels, task_ids))
        q_all = model(batch.x, batch.task)
        q = q_all[: cfg.batch_size, offset: offset + n_actions]
        loss = F.smooth_l1_loss(q.gather(1, torch.from_numpy(act).unsqueeze(1)).squeeze(1), td_target)
        if len(batch.y) > cfg.batch_size:  # replayed states of earlier tasks: keep their greedy actions
            loss = loss + F.cross_entropy(q_all[cfg.batch_size:], batch.y[cfg.batch_size:])
        self.optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        loss.backward()
        self.strategy.after_backward(model)  # the penalty's gradient first: the clip bounds the total
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        self.optimizer.step()  # type: ignore[union-attr]
        self.strategy.after_step(model)
        self.step += 1
        return float(loss.detach())

    def _buffer_batches(self, states: np.ndarray, task_id: int, offset: int, n_actions: int) -> BatchLoader:
        """States from the agent's own buffer, labelled with its greedy actions."""
        take = self.rng.choice(len(states), min(len(states), self.dqn.importance_states), replace=False)
        x = torch.from_numpy(states[take])
        with torch.no_grad():
            task = torch.full((len(x),), task_id, dtype=torch.long)
            labels = self._q(self.model, x, task, offset, n_actions).argmax(1) + offset
        return BatchLoader([TaskData(ArrayDataset(x, labels), task_id)], 256)
