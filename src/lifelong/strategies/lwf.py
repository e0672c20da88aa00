"""Learning without forgetting (Li & Hoiem 2017): keep the previous model's answers on the new data.

After each task the model is copied; while learning the next, a distillation term
distill * T^2 * KL(softmax(old / T) || softmax(new / T)) keeps the new model's outputs on the classes
learned before close to the old model's, with no stored data. As in the paper, there is one such
term per old output head, summed: in task-incremental streams each earlier task's classes form their
own softmax; in class- and domain-incremental streams the old classes share one output layer, so
there is one softmax over all of them.
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
    extra_forward = True

    def __init__(self, config: LwFConfig | None = None):
        self.config = config or LwFConfig()
        self.old: nn.Module | None = None
        self.old_state: dict[str, Tensor] | None = None  # kept for state_dict / resume
        self.old_heads: Tensor | None = None  # bool [H, C]: each old output head's classes (distinct rows)

    @property
    def old_classes(self) -> Tensor | None:
        """bool [C]: every class learned before the current task."""
        return None if self.old_heads is None else self.old_heads.any(0)

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        self.old = copy.deepcopy(model).eval().requires_grad_(False)
        self.old_state = {k: v.clone() for k, v in model.state_dict().items()}
        mask = getattr(model, "class_mask", None)
        # the distinct rows of the mask of tasks learned so far: one per head in task-IL, one in class-IL
        self.old_heads = torch.unique(mask[: task_id + 1], dim=0) if mask is not None else None

    def old_model(self, model: nn.Module) -> nn.Module:
        """The model as it was after the previous task."""
        if self.old is None:  # resumed from a state: rebuild the copy from the saved weights
            self.old = copy.deepcopy(model).eval().requires_grad_(False)
            self.old.load_state_dict(self.old_state)  # type: ignore[arg-type]
        return self.old

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.old_state is None or self.config.distill == 0:
            return None
        heads = self.old_heads if self.old_heads is not None else torch.isfinite(logits).all(0, keepdim=True)
        with torch.no_grad():
            old = self.old_model(model)(batch.x)  # raw logits of every class
        if not torch.isfinite(logits[:, heads.any(0)]).all():  # old classes masked now (task-IL): raw logits
            logits = model(batch.x)
        terms = [distillation(logits[:, head], old[:, head], self.config.temperature) for head in heads]
        return self.config.distill * torch.stack(terms).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"old_state": self.old_state, "old_heads": self.old_heads}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.old, self.old_state, self.old_heads = None, state["old_state"], state["old_heads"]
