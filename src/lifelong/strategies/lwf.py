"""Learning without forgetting (Li & Hoiem 2017): keep the previous model's answers on the new data.

After each task the model is copied; while learning the next, a distillation term
distill * T^2 * KL(softmax(old / T) || softmax(new / T)) over the classes learned before keeps the
new model's outputs on those classes close to the old model's, with no stored data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.strategies.base import Strategy, StrategyConfig


@dataclass
class LwFConfig(StrategyConfig):
    distill: float = 1.0  # weight of the distillation term
    temperature: float = 2.0


def distillation(new: Tensor, old: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(old / T) || softmax(new / T)), averaged over the batch."""
    return F.kl_div(F.log_softmax(new / temperature, -1), F.log_softmax(old / temperature, -1),
                    reduction="batchmean", log_target=True) * temperature ** 2


class LwF(Strategy):
    name = "lwf"

    def __init__(self, config: LwFConfig | None = None):
        self.config = config or LwFConfig()
        self.old: nn.Module | None = None
        self.old_state: dict[str, Tensor] | None = None  # kept for state_dict / resume
        self.old_classes: Tensor | None = None  # bool [C]: classes learned before the current task

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        self.old = copy.deepcopy(model).eval().requires_grad_(False)
        self.old_state = {k: v.clone() for k, v in model.state_dict().items()}
        mask = getattr(model, "class_mask", None)
        self.old_classes = mask[: task_id + 1].any(0).clone() if mask is not None else None

    def _old_model(self, model: nn.Module) -> nn.Module:
        if self.old is None:  # resumed from a state: rebuild the copy from the saved weights
            self.old = copy.deepcopy(model).eval().requires_grad_(False)
            self.old.load_state_dict(self.old_state)  # type: ignore[arg-type]
        return self.old

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.old_state is None or self.config.distill == 0:
            return None
        classes = self.old_classes if self.old_classes is not None else torch.isfinite(logits).all(0)
        with torch.no_grad():
            old = self._old_model(model)(batch.x)[:, classes]  # raw logits: every old class
        new = logits[:, classes]
        if not torch.isfinite(new).all():  # old classes masked in this scenario (task-IL): raw logits
            new = model(batch.x)[:, classes]
        return self.config.distill * distillation(new, old, self.config.temperature)

    def state_dict(self) -> dict[str, Any]:
        return {"old_state": self.old_state, "old_classes": self.old_classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.old, self.old_state, self.old_classes = None, state["old_state"], state["old_classes"]
