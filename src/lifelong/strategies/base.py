"""The strategy protocol: a small object with a few hooks, all optional.

The learner (and any user's own loop) calls them in this order for each task::

    strategy.before_task(model, task_id)
    for batch in strategy.train_data(stream, task_id) ...:
        batch = strategy.extend_batch(batch)          # replay adds stored samples
        logits = model(batch.x, batch.task)
        loss = strategy.loss(model, batch, logits)    # cross-entropy (iCaRL: sigmoid BCE)
        loss = loss + strategy.extra_loss(model, batch, logits)  # DER, LwF
        loss.backward()
        strategy.after_backward(model)                # consolidation adds its gradient; A-GEM projects
        optimizer.step()
        strategy.after_step(model)                    # SI integrates its path here
    strategy.after_task(model, task_id, batches)     # importance is estimated here; BiC calibrates

and at evaluation `strategy.predict(model, x, task, logits)` may replace the model's logits
(iCaRL's nearest mean of exemplars, BiC's corrected logits).

Everything a strategy knows lives in `state_dict()`, so a run can stop and resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.config import Config
from lifelong.data.task import Batch, TaskData, TaskStream


@dataclass
class StrategyConfig(Config):
    """Base of the typed per-strategy configs; they round-trip through JSON."""

    seed: int = 0  # for whatever the strategy draws at random (replay sampling, sampled Fisher labels)


class Strategy:
    """Naive fine-tuning: every hook does nothing. Other strategies override a few hooks."""

    name: ClassVar[str] = "naive"
    # runs forward passes of its own besides the learner's (distillation, logit matching, A-GEM's
    # reference gradient): such passes bypass DistributedDataParallel, so --distributed refuses it
    extra_forward: ClassVar[bool] = False
    # the optimizer the method is defined with, where it matters ("sgd" for A-GEM); None: any
    optimizer: ClassVar[str | None] = None

    def before_task(self, model: nn.Module, task_id: int) -> None:
        """Called before training on a task."""

    def train_data(self, stream: TaskStream, task_id: int) -> list[TaskData]:
        """The data to train on while learning `task_id` (joint training returns every task so far)."""
        return [TaskData(stream[task_id].train, task_id)]

    def extend_batch(self, batch: Batch) -> Batch:
        """Change a training batch before the forward pass (replay appends stored samples)."""
        return batch

    def loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor:
        """The batch's own loss: cross-entropy over the live classes (iCaRL replaces it). Next-token
        logits [N, L, V] against targets [N, L] (a language model, lifelong.lm): the mean over the
        tokens whose target is not -100 (padding; F.cross_entropy's ignore_index)."""
        if logits.dim() > 2:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.y.reshape(-1))
        return F.cross_entropy(logits, batch.y)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """A loss term added to the batch's cross-entropy (autograd path): distillation, logit matching."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Edit gradients after backward and before the optimizer step."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimizer step."""

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        """Called after training on a task, with its training data (e.g. to estimate importance)."""

    def predict(self, model: nn.Module, x: Any, task: Tensor, logits: Tensor) -> Tensor:
        """Scores to take the argmax of at evaluation; by default the model's own logits."""
        return logits

    def penalty(self, model: nn.Module) -> Tensor:
        """The consolidation loss term's value (for logging; training adds its gradient directly)."""
        return torch.zeros(())

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state but was given keys {sorted(state)}")


@dataclass
class NaiveConfig(StrategyConfig):
    pass


class Naive(Strategy):
    """Plain fine-tuning on each task in turn: the lower bound, it forgets."""

    name = "naive"

    def __init__(self, config: NaiveConfig | None = None):
        self.config = config or NaiveConfig()


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Named parameters that train (the ones a strategy protects or tracks)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def state_nbytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) strategy state: what consolidation or a memory costs."""
    if isinstance(state, Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0
