"""iCaRL (Rebuffi et al. 2017): herding exemplars, distillation, and a nearest-mean-of-exemplars
classifier.

While a task trains, each batch is joined by as many exemplars of earlier classes and the old
model's outputs on the old classes are distilled (as LwF does). After the task, herding picks each
new class's exemplars (memory / classes per class, older classes trimmed), and the mean feature of
each class's exemplars becomes its prototype: prediction is the nearest prototype (cosine), which
does not inherit the output layer's bias toward the newest classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.task import Batch, concat_inputs
from lifelong.importance import as_batch
from lifelong.strategies.base import Strategy, StrategyConfig
from lifelong.strategies.lwf import LwF, LwFConfig
from lifelong.strategies.memory import ReplayMemory


@dataclass
class ICaRLConfig(StrategyConfig):
    memory: int = 600
    distill: float = 1.0  # weight of the distillation term
    temperature: float = 2.0
    nearest_mean: bool = True  # predict with the exemplar means (False: the output layer)


def _features(model: nn.Module, x: Any, task: Tensor) -> Tensor:
    return F.normalize(model.features(x, task), dim=1)  # type: ignore[operator]


class ICaRL(Strategy):
    name = "icarl"

    def __init__(self, config: ICaRLConfig | None = None):
        self.config = config or ICaRLConfig()
        self.memory = ReplayMemory(self.config.memory, "herding", torch.Generator().manual_seed(self.config.seed))
        self.distill = LwF(LwFConfig(self.config.seed, self.config.distill, self.config.temperature))
        self.means: Tensor | None = None  # [C, d] exemplar means; rows of classes without exemplars are NaN

    def extend_batch(self, batch: Batch) -> Batch:
        if not len(self.memory):
            return batch
        old = self.memory.sample(len(batch.y))
        return Batch(concat_inputs([batch.x, old.x]), torch.cat([batch.y, old.y]), torch.cat([batch.task, old.task]))

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        return self.distill.extra_loss(model, batch, logits)

    @torch.no_grad()
    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        was_training = model.training
        model.eval()
        parts = [as_batch(b) for b in batches]
        data = Batch(concat_inputs([b.x for b in parts]), torch.cat([b.y for b in parts]),
                     torch.cat([b.task for b in parts]))
        features = torch.cat([_features(model, b.x, b.task) for b in parts])
        self.memory.herd(data, features)
        exemplars = self.memory.all()
        f = _features(model, exemplars.x, exemplars.task)
        num_classes = int(getattr(model, "num_classes"))  # noqa: B009
        means = torch.full((num_classes, f.shape[1]), float("nan"))
        for c in exemplars.y.unique().tolist():
            means[c] = F.normalize(f[exemplars.y == c].mean(0), dim=0)
        self.means = means
        model.train(was_training)
        self.distill.after_task(model, task_id, [])

    def predict(self, model: nn.Module, x: Any, task: Tensor, logits: Tensor) -> Tensor:
        if not self.config.nearest_mean or self.means is None:
            return logits
        f = _features(model, x, task)
        scores = f @ torch.nan_to_num(self.means).T  # cosine similarity to each prototype
        known = ~torch.isnan(self.means[:, 0]) & torch.isfinite(logits)
        return scores.masked_fill(~known, float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "distill": self.distill.state_dict(), "means": self.means}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.distill.load_state_dict(state["distill"])
        self.means = state["means"]
