"""Synaptic intelligence (Zenke et al. 2017): importance is each parameter's share of the loss
decrease along the training path, accumulated while training, with no extra pass over the data.

    omega_i   += -g_i * (theta_i after step - theta_i before step)      (every step)
    Omega_i    = max(omega_i, 0) / ((theta_i(end) - theta_i(start))^2 + xi)   (end of task)

g is the gradient of the training loss before SI adds its own penalty gradient. The clamp at 0
keeps the quadratic convex: with adaptive optimisers a step can move against the gradient, giving
a negative path integral that would otherwise reward drifting away. Omega accumulates over tasks
and the penalty is anchored at the latest solution; Zenke's c is strength / 2 here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.strategies.base import Strategy, trainable
from lifelong.strategies.quadratic import Consolidation, ConsolidationConfig


@dataclass
class SIConfig(ConsolidationConfig):
    strength: float = 1.0
    xi: float = 0.1  # damping: keeps Omega finite for parameters that barely moved


class SI(Consolidation, Strategy):
    name = "si"

    def __init__(self, config: SIConfig | None = None):
        self.config = config or SIConfig()
        super().__init__(self.config)
        self.start: list[Tensor] = []  # parameters at the start of the task
        self.previous: list[Tensor] = []  # parameters before the current step
        self.grad: list[Tensor] = []  # the loss gradient of the current step
        self.omega: list[Tensor] = []  # the running path integral

    def before_task(self, model: nn.Module, task_id: int) -> None:
        params = [p.detach() for p in trainable(model).values()]
        self.start = [p.clone() for p in params]
        self.previous = [p.clone() for p in params]
        self.grad = [torch.zeros_like(p) for p in params]
        self.omega = [torch.zeros_like(p) for p in params]

    def after_backward(self, model: nn.Module) -> None:
        params = list(trainable(model).values())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        torch._foreach_copy_(self.grad, grads)
        super().after_backward(model)

    def after_step(self, model: nn.Module) -> None:
        params = [p.detach() for p in trainable(model).values()]
        delta = torch._foreach_sub(params, self.previous)
        torch._foreach_addcmul_(self.omega, self.grad, delta, value=-1.0)
        torch._foreach_copy_(self.previous, params)

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        named = {n: p.detach() for n, p in trainable(model).items()}
        importance = {}
        for (n, p), w, s in zip(named.items(), self.omega, self.start, strict=True):
            importance[n] = w.clamp(min=0) / ((p - s) ** 2 + self.config.xi)
        self.quadratic.accumulate(importance, named)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "start": self.start, "previous": self.previous, "omega": self.omega}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.start, self.previous, self.omega = state["start"], state["previous"], state["omega"]
        self.grad = [torch.zeros_like(p) for p in self.omega]
