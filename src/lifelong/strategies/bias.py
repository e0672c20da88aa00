"""Corrections of the output layer's bias toward the newest classes, for any replay method.

- WA, weight aligning (Zhao et al. 2020): after each task, the output weights of the task's new
  classes are scaled so that their mean norm equals the old classes' mean norm.
- BiC, bias correction (Wu et al. 2019): after each task, two parameters (alpha, beta) rescale the
  new classes' logits, alpha * z + beta, fitted by cross-entropy on a small class-balanced held-out
  memory whose samples are never trained on; predictions use the corrected logits. As in the paper,
  each task keeps its own correction of its own classes (`keep_earlier`; False keeps only the
  newest); unlike the paper, training uses the uncorrected logits (the paper runs the frozen earlier
  corrections inside the training forward pass too), so the correction can be composed with any
  replay method.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.devices import model_device
from lifelong.importance import as_batch
from lifelong.strategies.base import Strategy, StrategyConfig
from lifelong.strategies.memory import ReplayMemory


@dataclass
class WAConfig(StrategyConfig):
    pass


class WA(Strategy):
    name = "wa"

    def __init__(self, config: WAConfig | None = None):
        self.config = config or WAConfig()
        self.seen = torch.zeros(0, dtype=torch.bool)

    @torch.no_grad()
    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        weight: Tensor = model.head.weight  # type: ignore[union-attr, assignment]
        if len(self.seen) != len(weight):
            self.seen = torch.zeros(len(weight), dtype=torch.bool, device=weight.device)
        new = torch.zeros_like(self.seen)
        for b in batches:
            new[as_batch(b).y] = True
        new &= ~self.seen
        if self.seen.any() and new.any():
            norms = weight.norm(dim=1)
            weight[new] *= norms[self.seen].mean() / norms[new].mean()
        self.seen |= new

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]


@dataclass
class BiCConfig(StrategyConfig):
    holdout: int = 60  # held-out samples (class-balanced), taken from the stream and never trained on
    steps: int = 200
    lr: float = 0.01
    keep_earlier: bool = True  # apply every task's correction to its classes (False: the newest only)


class BiC(Strategy):
    name = "bic"

    def __init__(self, config: BiCConfig | None = None):
        self.config = config or BiCConfig()
        self.memory = ReplayMemory(self.config.holdout, "balanced", torch.Generator().manual_seed(self.config.seed))
        self.corrections: list[tuple[Tensor, float, float]] = []  # (classes, alpha, beta), oldest first
        self.seen = torch.zeros(0, dtype=torch.bool)

    def extend_batch(self, batch: Batch) -> Batch:
        # A tenth of each batch is offered to the held-out memory (so training batches stay full);
        # what it keeps is not trained on.
        offered = len(batch.y) // 10
        if offered == 0:  # a batch of fewer than 10 is all trained on
            return batch
        kept = torch.zeros(len(batch.y), dtype=torch.bool)
        kept[:offered] = self.memory.add(Batch(batch.x[:offered], batch.y[:offered], batch.task[:offered]))
        if not kept.any():
            return batch
        train = ~kept
        mask = None if batch.mask is None else batch.mask[train]
        return Batch(batch.x[train], batch.y[train], batch.task[train], mask)

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        held = self.memory.all() if len(self.memory) else None
        num_classes, device = int(getattr(model, "num_classes")), model_device(model)  # noqa: B009
        if len(self.seen) != num_classes:
            self.seen = torch.cat([self.seen.to(device), torch.zeros(num_classes - len(self.seen), dtype=torch.bool,
                                                                      device=device)])
        new = torch.zeros(num_classes, dtype=torch.bool, device=device)
        for b in batches:
            new[as_batch(b).y] = True
        new &= ~self.seen
        if not self.config.keep_earlier:
            self.corrections = []
        if held is not None and self.seen.any() and new.any():
            with torch.no_grad():
                was_training = model.training
                logits = self._corrected(model.eval()(held.x, held.task))  # the earlier corrections applied
                model.train(was_training)
            alpha, beta = fit_correction(logits, held.y, new, self.config.steps, self.config.lr)
            self.corrections.append((new, alpha, beta))
        self.seen |= new

    def _corrected(self, logits: Tensor) -> Tensor:
        for classes, alpha, beta in self.corrections:
            logits = correct(logits, classes[: logits.shape[1]], alpha, beta)
        return logits

    def predict(self, model: nn.Module, x: Any, task: Tensor, logits: Tensor) -> Tensor:
        return self._corrected(logits)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "seen": self.seen,
                "classes": [c for c, _, _ in self.corrections], "alpha": [a for _, a, _ in self.corrections],
                "beta": [b for _, _, b in self.corrections]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.seen = state["seen"]
        self.corrections = list(zip(state["classes"], state["alpha"], state["beta"], strict=True))


def correct(logits: Tensor, new: Tensor, alpha: float | Tensor, beta: float | Tensor) -> Tensor:
    """alpha * z + beta on the new classes' logits, the others unchanged (masked -inf logits stay out
    of the product, whose gradient would otherwise be NaN)."""
    return torch.where(new, alpha * torch.where(new, logits, 0.0) + beta, logits)


def fit_correction(logits: Tensor, labels: Tensor, new: Tensor, steps: int, lr: float) -> tuple[float, float]:
    alpha = torch.ones((), requires_grad=True)
    beta = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([alpha, beta], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(correct(logits, new, alpha, beta), labels).backward()
        optimizer.step()
    return float(alpha.detach()), float(beta.detach())
