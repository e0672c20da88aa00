"""iCaRL (Rebuffi et al. 2017): herding exemplars, distillation, and a nearest-mean-of-exemplars
classifier.

While a task trains, each batch is joined by as many exemplars of earlier classes. The loss is the
paper's (`loss="bce"`): a sigmoid binary cross-entropy over every class seen so far, whose targets
are the labels' one-hot for the current task's classes and the previous model's sigmoid outputs for
the earlier classes (classification and distillation in one term). `loss="ce"` is the softmax
variant many re-implementations use (cross-entropy plus LwF's KL distillation of the old classes).
After the task, herding picks each new class's exemplars (memory / classes per class, older classes
trimmed), and the mean feature of each class's exemplars becomes its prototype: prediction is the
nearest prototype (cosine), which does not inherit the output layer's bias toward the newest classes.
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

LOSSES = ("bce", "ce")


@dataclass
class ICaRLConfig(StrategyConfig):
    memory: int = 600
    loss: str = "bce"  # "bce": the paper's sigmoid loss with distillation targets; "ce": softmax CE + KL
    distill: float = 1.0  # "ce" only: weight of the distillation term
    temperature: float = 2.0  # "ce" only
    nearest_mean: bool = True  # predict with the exemplar means (False: the output layer)
    memory_device: str = "model"  # where the memory is kept: "model" (the model's device) or "cpu"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"iCaRL loss must be one of {LOSSES}, not {self.loss!r}")


def _features(model: nn.Module, x: Any, task: Tensor) -> Tensor:
    return F.normalize(model.features(x, task), dim=1)  # type: ignore[operator]


class ICaRL(Strategy):
    name = "icarl"
    extra_forward = True

    def __init__(self, config: ICaRLConfig | None = None):
        self.config = config or ICaRLConfig()
        self.memory = ReplayMemory(self.config.memory, "herding", torch.Generator().manual_seed(self.config.seed),
                                   self.config.memory_device)
        self.distill = LwF(LwFConfig(self.config.seed, self.config.distill, self.config.temperature))
        self.means: Tensor | None = None  # [C, d] exemplar means; rows of classes without exemplars are NaN

    def extend_batch(self, batch: Batch) -> Batch:
        if not len(self.memory):
            return batch
        old = self.memory.sample(len(batch.y))
        return Batch(concat_inputs([batch.x, old.x]), torch.cat([batch.y, old.y]), torch.cat([batch.task, old.task]))

    def loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor:
        if self.config.loss == "ce":
            return super().loss(model, batch, logits)
        live = torch.isfinite(logits)  # the classes seen so far (the others are masked to -inf)
        target = F.one_hot(batch.y, logits.shape[1]).float()
        old = self.distill.old_classes
        if self.distill.old_state is not None and old is not None:
            with torch.no_grad():
                earlier = torch.sigmoid(self.distill.old_model(model)(batch.x))
            target[:, old] = earlier[:, old]
        return F.binary_cross_entropy_with_logits(logits[live], target[live])

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        return self.distill.extra_loss(model, batch, logits) if self.config.loss == "ce" else None

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
        means = torch.full((num_classes, f.shape[1]), float("nan"), device=f.device)
        for c in exemplars.y.unique().tolist():
            means[c] = F.normalize(f[exemplars.y == c].mean(0), dim=0)
        self.means = means
        model.train(was_training)
        self.distill.after_task(model, task_id, [])  # keeps the previous model (both losses use it)

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
