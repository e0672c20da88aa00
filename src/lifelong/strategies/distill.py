"""Functional consolidation: distil the earlier policy on stored states.

After each task, a sample of its states (the states the agent visited, for an agent; training
inputs for a classifier) is stored with the model's output distribution there. While later tasks
are learned, each update adds

    alpha * mean over stored states s of KL(pi_old(.|s) || pi(.|s))

over the stored state's own task's actions, so what the agent did on earlier tasks is kept as a
function rather than as weights. This is the behaviour-cloning regulariser of ClonEx (Wolczyk et
al. 2022, "Disentangling transfer in continual reinforcement learning") and the distillation of
Progress & Compress (Schwarz et al. 2018) and of policy distillation (Rusu et al. 2016), with the
old policy's probabilities stored instead of an old network kept. It stores data: its memory is
counted (`stored_bytes`: the states, their task ids and the stored distributions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.task import Batch, concat_inputs
from lifelong.importance.estimate import as_batch
from lifelong.strategies.base import Strategy, StrategyConfig


@dataclass
class DistillConfig(StrategyConfig):
    alpha: float = 1.0  # weight of the distillation term
    per_task: int = 1_000  # states stored per task
    replay_batch: int = 256  # stored states per update (drawn uniformly over every earlier task)

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.per_task < 1 or self.replay_batch < 1:
            raise ValueError("alpha must be >= 0, per_task and replay_batch >= 1")


def policy_kl(new_logits: Tensor, old_logp: Tensor) -> Tensor:
    """Mean over samples of KL(old || new) over each sample's live classes (finite old log-probs)."""
    live = torch.isfinite(old_logp)
    new_logp = torch.log_softmax(new_logits, -1)
    terms = old_logp.exp() * (torch.where(live, old_logp, 0.0) - torch.where(live, new_logp, 0.0))
    return torch.where(live, terms, 0.0).sum(-1).mean()


class Distill(Strategy):
    """Keep the earlier tasks' output distributions on stored states (ClonEx / P&C style)."""

    name = "distill"
    extra_forward = True  # the stored states' pass bypasses DistributedDataParallel

    def __init__(self, config: DistillConfig | None = None):
        self.config = config or DistillConfig()
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.x: Any = None  # stored inputs
        self.task: Tensor | None = None
        self.logp: Tensor | None = None  # the model's log-probabilities there when the task ended

    def __len__(self) -> int:
        return 0 if self.task is None else len(self.task)

    @torch.no_grad()
    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        parts = [as_batch(b) for b in batches]
        if not parts:
            return
        x = concat_inputs([b.x for b in parts])
        task = torch.cat([b.task for b in parts])
        take = torch.randperm(len(task), generator=self.generator)[: self.config.per_task]
        x, task = x[take], task[take]
        was_training = model.training
        model.eval()
        try:
            logp = torch.log_softmax(model(x, task), -1)
        finally:
            model.train(was_training)
        if self.task is None:
            self.x, self.task, self.logp = x, task, logp
        else:
            assert self.logp is not None
            width = max(self.logp.shape[1], logp.shape[1])  # an output that grew: new classes are -inf for old samples
            self.x = concat_inputs([self.x, x])
            self.task = torch.cat([self.task, task])
            self.logp = torch.cat([_widen(self.logp, width), _widen(logp, width)])

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.task is None or self.config.alpha == 0:
            return None
        assert self.logp is not None
        idx = torch.randint(len(self.task), (self.config.replay_batch,), generator=self.generator)
        return self.config.alpha * policy_kl(model(self.x[idx], self.task[idx]), self.logp[idx])

    def stored_bytes(self) -> int:
        """Bytes of what is stored: the states, their task ids and the distributions."""
        if self.task is None:
            return 0
        assert self.logp is not None
        return int(self.x.nbytes + self.task.nbytes + self.logp.nbytes)

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "task": self.task, "logp": self.logp, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.task, self.logp = state["x"], state["task"], state["logp"]
        self.generator.set_state(state["generator"])


def _widen(logp: Tensor, width: int) -> Tensor:
    if logp.shape[1] == width:
        return logp
    return torch.cat([logp, logp.new_full((len(logp), width - logp.shape[1]), float("-inf"))], 1)
