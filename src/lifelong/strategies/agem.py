"""Averaged gradient episodic memory (Chaudhry et al. 2019, A-GEM).

After backward, the gradient g is compared with a reference gradient g_ref of the loss on stored
samples of earlier tasks; if they conflict (g . g_ref < 0), g is projected to
g - (g . g_ref / g_ref . g_ref) g_ref, so the step does not increase the memory's loss (to first order).

That guarantee holds for a plain gradient step: Adam rescales each coordinate of the projected
gradient, which can turn it against g_ref again. So A-GEM declares SGD (`optimizer = "sgd"`), which
the learner uses unless told otherwise, as the paper and Mammoth do. Measured on Split
Fashion-MNIST class-IL (seed 0, fixed order, 1 epoch): Adam 1e-3 0.453 final accuracy, SGD 0.1 0.324,
SGD 0.03 0.423 (the learning rate is chosen on validation: lifelong.presets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.task import Batch
from lifelong.strategies.base import Strategy, StrategyConfig, trainable
from lifelong.strategies.memory import ReplayMemory


@dataclass
class AGEMConfig(StrategyConfig):
    memory: int = 600
    selection: str = "balanced"
    reference_batch: int = 256
    memory_device: str = "model"  # where the memory is kept: "model" (the model's device) or "cpu"


def project(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> bool:
    """Project `grads` in place onto the half-space that does not conflict with `reference`.
    Returns whether they conflicted."""
    dot = sum((g * r).sum() for g, r in zip(grads, reference, strict=True))
    if dot >= 0:
        return False
    norm = sum((r * r).sum() for r in reference)
    for g, r in zip(grads, reference, strict=True):
        g.sub_(r, alpha=float(dot / norm))
    return True


class AGEM(Strategy):
    name = "agem"
    extra_forward = True
    optimizer = "sgd"  # the projection keeps the memory loss from rising only for a plain gradient step

    def __init__(self, config: AGEMConfig | None = None):
        self.config = config or AGEMConfig()
        self.memory = ReplayMemory(self.config.memory, self.config.selection,
                                   torch.Generator().manual_seed(self.config.seed), self.config.memory_device)
        self.task_id = 0

    def before_task(self, model: nn.Module, task_id: int) -> None:
        self.task_id = task_id

    def extend_batch(self, batch: Batch) -> Batch:
        self.memory.add(batch)
        return batch

    def after_backward(self, model: nn.Module) -> None:
        if self.task_id == 0 or len(self.memory) == 0:
            return
        earlier = (self.memory.task[: len(self.memory)] < self.task_id).nonzero().squeeze(1)
        if len(earlier) == 0:
            return
        draw = torch.randperm(len(earlier), generator=self.memory.generator)[: self.config.reference_batch]
        x, y, t, _ = self.memory.take(earlier[draw.to(earlier.device)])
        params = [p for p in trainable(model).values() if p.grad is not None]
        was_training = model.training
        model.eval()  # the reference loss is the memory's loss itself, not one under dropout noise
        try:
            raw = torch.autograd.grad(F.cross_entropy(model(x, t), y), params, allow_unused=True)
        finally:
            model.train(was_training)
        reference = [r if r is not None else torch.zeros_like(p) for r, p in zip(raw, params, strict=True)]
        project([p.grad for p in params if p.grad is not None], reference)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "task_id": self.task_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.task_id = state["task_id"]
