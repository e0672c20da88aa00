"""Adam as one compiled pass per tensor, with a quadratic penalty's gradient folded into that pass.

Consolidation's default way adds strength * (P theta - P m) to `.grad` after backward (two passes over
every parameter), and then the optimizer reads `.grad` once more. `CompiledAdam` is torch's Adam update
(no weight decay, no amsgrad) compiled into one kernel per tensor; `fold(penalty, model)` makes that
kernel add the penalty's gradient itself, so the penalty costs reading P and P m (8 bytes a parameter)
and no pass of its own. `benchmarks/lm_cost.py fold` times it against torch's Adam with and without
`add_gradient_`; `LearnerConfig(optimizer="adam-compiled")` trains with it and folds the penalty of
every consolidation part that keeps its state dense in float32 (the default storage).

The result is torch's Adam on the penalised gradient, to rounding (`tests/test_optim.py`). A weight whose
penalised gradient is within a few eps of zero rounds differently on Adam's first step, which divides
g by |g| + eps; such a step still stays within lr, as Adam's always does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.strategies.quadratic import QuadraticPenalty


def _adam(theta: Tensor, grad: Tensor, m: Tensor, v: Tensor, step_size: Tensor, bias2_sqrt: Tensor,
          beta1: Tensor, beta2: Tensor, eps: Tensor) -> None:
    m.mul_(beta1).add_(grad * (1 - beta1))
    v.mul_(beta2).add_(grad * grad * (1 - beta2))
    theta.sub_(m / (v.sqrt() / bias2_sqrt + eps) * step_size)  # torch's addcdiv_, with a tensor step size


def _adam_with_penalty(theta: Tensor, grad: Tensor, m: Tensor, v: Tensor, step_size: Tensor, bias2_sqrt: Tensor,
                       beta1: Tensor, beta2: Tensor, eps: Tensor,
                       precision: Tensor, weighted_centre: Tensor, strength: Tensor) -> None:
    _adam(theta, grad + strength * (precision * theta - weighted_centre), m, v, step_size, bias2_sqrt,
          beta1, beta2, eps)


def foldable(penalty: QuadraticPenalty) -> bool:
    """Whether `CompiledAdam.fold` takes this penalty: dense float32 state (P and P m), the default."""
    return penalty.storage == "fp32" and penalty.keep == 1


class CompiledAdam(torch.optim.Optimizer):
    """torch's Adam update as one compiled kernel per tensor, optionally with folded penalties.

    Scalars go in as 0-d tensors and tensors go in flat, so one kernel (compiled once, `dynamic=True`)
    serves every step and every shape. `compile=False` runs the same kernel eagerly (where no C++
    compiler is at hand). The state (`exp_avg`, `exp_avg_sq`, `step`) has torch's Adam's names, so a
    checkpoint of one loads into the other.

    >>> net = torch.nn.Linear(2, 1)
    >>> opt = CompiledAdam(net.parameters(), lr=0.1, compile=False)
    >>> net(torch.ones(1, 2)).sum().backward()
    >>> opt.step()
    >>> sorted(opt.state[net.weight])
    ['exp_avg', 'exp_avg_sq', 'step']
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, compile: bool = True):
        if lr <= 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"lr must be > 0, eps >= 0 and betas in [0, 1): lr={lr}, eps={eps}, betas={betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        for group in self.param_groups:
            for p in group["params"]:
                if hasattr(p, "to_local"):
                    raise ValueError("CompiledAdam does not take FSDP-sharded parameters; use optimizer='adam'")
        wrap: Callable[[Callable[..., None]], Callable[..., None]] = (
            (lambda f: torch.compile(f, dynamic=True)) if compile else (lambda f: f))
        self._plain, self._folded = wrap(_adam), wrap(_adam_with_penalty)
        self._penalties: list[tuple[QuadraticPenalty, nn.Module]] = []

    def fold(self, penalty: QuadraticPenalty, model: nn.Module) -> None:
        """Add `penalty`'s gradient (for the parameters of `model` it protects) inside every step from
        now on. The penalty is read at each step, so tasks merged into it later count, as does a new
        strength. The caller must then not add it to `.grad` as well (`Consolidation.fold_into`)."""
        if not foldable(penalty):
            raise ValueError(f"only a dense fp32 penalty folds into Adam (storage={penalty.storage!r}, "
                             f"keep={penalty.keep}); keep it out of the optimizer")
        self._penalties.append((penalty, model))

    def _penalty_terms(self) -> dict[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Parameter -> (P, P m, strength as a 0-d tensor, one per penalty) of the folded penalties, as flat views."""
        terms: dict[Tensor, tuple[Tensor, Tensor, Tensor]] = {}
        for penalty, model in self._penalties:
            if penalty.empty or penalty.strength == 0:
                continue
            strength = torch.tensor(penalty.strength, device=penalty.slots[0]["precision"].device)
            for param, slot in zip(penalty._params(model), penalty.slots, strict=True):
                if param in terms:
                    raise ValueError("two folded penalties protect the same parameter; merge them into one")
                terms[param] = (slot["precision"].view(-1), slot["weighted_centre"].view(-1), strength)
        return terms

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        terms = self._penalty_terms()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            scalars = {}  # per step of a given count: tensors, so that nothing recompiles
            for p in group["params"]:
                term = terms.get(p)
                if p.grad is None and term is None:
                    continue
                if not p.is_contiguous():
                    raise ValueError("CompiledAdam updates parameters through flat views: make them contiguous")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                state["step"] += 1
                count = int(state["step"].item())
                if count not in scalars:
                    device = p.device
                    scalars[count] = [torch.tensor(v, device=device) for v in (
                        group["lr"] / (1 - beta1 ** count), math.sqrt(1 - beta2 ** count), beta1, beta2, group["eps"])]
                grad = p.grad.view(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                args = (p.view(-1), grad, state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1), *scalars[count])
                if term is None:
                    self._plain(*args)
                else:
                    self._folded(*args, *term)
        return loss
