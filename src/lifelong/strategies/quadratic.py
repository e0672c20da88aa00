"""One quadratic penalty for every importance-based method (EWC, online EWC, SI, MAS).

The methods differ only in how importance is estimated and decayed. Their penalty is always

    strength / 2 * sum_i P_i (theta_i - m_i)^2 + strength / 2 * r

kept as two tensors per parameter (precision P, centre m) and one scalar r, whatever the number
of tasks. A sum of per-task quadratics merges exactly into that form:

    a (x - u)^2 + b (x - v)^2 = (a + b) (x - w)^2 + ab / (a + b) (u - v)^2,  w = (a u + b v) / (a + b)

so EWC with one penalty per earlier task (Kirkpatrick et al. 2017) costs one penalty in memory
and in time. Training never builds an autograd graph for it: `add_gradient_` adds
strength * P * (theta - m) to `.grad` after backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class QuadraticPenalty:
    """A diagonal quadratic around a centre, merged over tasks.

    >>> import torch
    >>> q = QuadraticPenalty(strength=2.0)
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad(): _ = net.weight.fill_(3.0)
    >>> q.add({"weight": torch.tensor([[1.0]])}, {"weight": torch.tensor([[1.0]])})
    >>> q.add({"weight": torch.tensor([[1.0]])}, {"weight": torch.tensor([[2.0]])})
    >>> float(q.value(net).detach())  # 2/2 * (1 * (3-1)^2 + 1 * (3-2)^2)
    5.0
    """

    def __init__(self, strength: float):
        self.strength = float(strength)
        self.names: list[str] = []
        self.precision: list[Tensor] = []
        self.centre: list[Tensor] = []
        self.residual = 0.0  # the penalty's minimum value: constant in theta, kept so values are exact
        self._scaled: tuple[list[Tensor], list[Tensor]] | None = None
        self._bound: tuple[int, list[nn.Parameter]] | None = None

    @property
    def empty(self) -> bool:
        return not self.names

    def _start(self, importance: dict[str, Tensor], anchor: dict[str, Tensor]) -> None:
        self.names = list(importance)
        self.precision = [importance[n].detach().clone() for n in self.names]
        self.centre = [anchor[n].detach().clone() for n in self.names]
        self.residual = 0.0

    def _check(self, importance: dict[str, Tensor]) -> None:
        if list(importance) != self.names:
            raise ValueError("importance covers other parameters than the penalty: "
                             f"{sorted(set(importance) ^ set(self.names))[:5]}")

    def add(self, importance: dict[str, Tensor], anchor: dict[str, Tensor], decay: float = 1.0) -> None:
        """Add importance * (theta - anchor)^2 to decay * (the current quadratic), merged exactly."""
        self._scaled = None
        if self.empty:
            self._start(importance, anchor)
            return
        self._check(importance)
        residual = decay * self.residual
        for i, n in enumerate(self.names):
            a, b = decay * self.precision[i], importance[n].detach()
            u, v = self.centre[i], anchor[n].detach()
            total = a + b
            safe = torch.where(total > 0, total, torch.ones_like(total))
            self.centre[i] = torch.where(total > 0, (a * u + b * v) / safe, v)
            residual += float((a * b / safe * (u - v) ** 2).sum(dtype=torch.float64))
            self.precision[i] = total
        self.residual = residual

    def accumulate(self, importance: dict[str, Tensor], anchor: dict[str, Tensor], decay: float = 1.0) -> None:
        """precision <- decay * precision + importance, centred on `anchor` alone (the latest
        parameters): the online form of Schwarz et al. 2018, and SI's and MAS's own rule."""
        self._scaled = None
        if self.empty:
            self._start(importance, anchor)
            return
        self._check(importance)
        self.precision = [decay * p + importance[n].detach() for p, n in zip(self.precision, self.names, strict=True)]
        self.centre = [anchor[n].detach().clone() for n in self.names]
        self.residual = 0.0

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        if self._bound is None or self._bound[0] != id(model):
            named = dict(model.named_parameters())
            missing = [n for n in self.names if n not in named]
            if missing:
                raise ValueError(f"the model has no parameter(s) {missing[:5]} that this penalty protects")
            params = [named[n] for n in self.names]
            for p, c in zip(params, self.centre, strict=True):
                if p.shape != c.shape:
                    raise ValueError(f"parameter shape {tuple(p.shape)} differs from the saved {tuple(c.shape)}")
            self._bound = (id(model), params)
        return self._bound[1]

    def value(self, model: nn.Module) -> Tensor:
        """The penalty, differentiable in the model's parameters."""
        if self.empty:
            return torch.zeros(())
        params = self._params(model)
        total = torch.zeros(())
        for p, m, prec in zip(params, self.centre, self.precision, strict=True):
            total = total + ((p - m) ** 2 * prec).sum()
        return 0.5 * self.strength * (total + self.residual)

    def add_gradient_(self, model: nn.Module) -> None:
        """grad += strength * P * (theta - m), with two fused passes and no autograd graph."""
        if self.empty or self.strength == 0:
            return
        params = self._params(model)
        if self._scaled is None:
            scaled_p = [self.strength * p for p in self.precision]
            self._scaled = (scaled_p, [sp * m for sp, m in zip(scaled_p, self.centre, strict=True)])
        scaled_p, scaled_pm = self._scaled
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        with torch.no_grad():
            torch._foreach_addcmul_(grads, scaled_p, [p.detach() for p in params])
            torch._foreach_sub_(grads, scaled_pm)

    def state_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "names": list(self.names), "precision": list(self.precision),
                "centre": list(self.centre), "residual": self.residual}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strength = float(state["strength"])
        self.names = list(state["names"])
        self.precision = [t.clone() for t in state["precision"]]
        self.centre = [t.clone() for t in state["centre"]]
        self.residual = float(state["residual"])
        self._scaled = self._bound = None


class Consolidation:
    """What EWC, online EWC, SI and MAS share: one `QuadraticPenalty` whose gradient is added
    after backward. Each method only decides the importance and how it merges (`add` for EWC's
    sum over tasks, `accumulate` for the online rule)."""

    def __init__(self, strength: float):
        self.quadratic = QuadraticPenalty(strength)

    def after_backward(self, model: nn.Module) -> None:
        self.quadratic.add_gradient_(model)

    def penalty(self, model: nn.Module) -> Tensor:
        return self.quadratic.value(model)

    def state_dict(self) -> dict[str, Any]:
        return {"quadratic": self.quadratic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.quadratic.load_state_dict(state["quadratic"])
