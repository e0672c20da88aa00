"""The penalty's gradient folded into Adam's step: what EWC costs when the gradient is read once.

By default the library adds strength * (P theta - P m) to `.grad` after backward (two passes over the
parameters), then the optimizer reads `.grad` again. `lifelong.optim.CompiledAdam` is Adam as one
compiled pass per tensor (torch.compile), plain or with the penalty's gradient added inside the same
pass (`LearnerConfig(optimizer="adam-compiled")` trains that way): the penalty then costs reading P and
P m (8 bytes a parameter) and no extra pass over `.grad`. Four optimizers take turns on the same
model, so that the machine's load hits them alike:

- torch's Adam, naive, and with the library's `add_gradient_` (the committed step ratio's two sides);
- the compiled Adam, naive, and with the penalty folded in (the folded step ratio's two sides).

Before any timing, one folded step from fresh state must give the parameters, to rounding, that the
library's gradient plus torch's Adam give. The update alone (penalty and optimizer, on the last
gradients) is also timed for each, fastest of as many calls as steps. Run it as `python benchmarks/lm_cost.py fold`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lm_cost import LENGTH, _batch, _fastest, _step
from torch import Tensor

from lifelong.models.gpt import GPT, gpt_config
from lifelong.optim import CompiledAdam
from lifelong.strategies.quadratic import QuadraticPenalty

EPS = 1e-8  # torch.optim.Adam's default


def _folded(params: list[torch.nn.Parameter], model: torch.nn.Module, lr: float,
            penalty: QuadraticPenalty) -> CompiledAdam:
    opt = CompiledAdam(params, lr=lr)
    opt.fold(penalty, model)
    return opt


def _check(model: torch.nn.Module, penalty: QuadraticPenalty, x: Tensor, y: Tensor, lr: float = 1e-4) -> None:
    """One folded step from fresh state against the library's gradient and torch's Adam; parameters and
    gradients are put back afterwards. Where the penalised gradient is within 100 eps of zero, Adam's
    first step g / (|g| + eps) turns on the gradient's last bits, which the two ways round differently
    (at gpt-100m, single weights out of millions), so there the step is only held to its bound, lr."""
    params = list(model.parameters())
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    start = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    penalty.add_gradient_(model)
    steep = [p.grad.abs() > 100 * EPS for p in params]  # type: ignore[union-attr]
    torch.optim.Adam(params, lr=lr).step()
    expected = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s, g in zip(params, start, grads, strict=True):
            p.copy_(s)
            p.grad = g
    _folded(params, model, lr, penalty).step()
    for p, e, well in zip(params, expected, steep, strict=True):
        torch.testing.assert_close(p.detach()[well], e[well])
        assert ((p.detach() - e)[~well].abs() <= lr).all()
    with torch.no_grad():
        for p, s in zip(params, start, strict=True):
            p.copy_(s)
    model.zero_grad(set_to_none=True)


def fold_steps(size: str, batch: int, steps: int) -> dict[str, Any]:
    """Full training steps of a GPT of `size`, four optimizers in turn (see the module docstring)."""
    torch.manual_seed(0)
    model = GPT(gpt_config(size, block_size=LENGTH))
    x, y = _batch(batch, 0)
    params = list(model.parameters())
    importance = {n: torch.rand_like(p) for n, p in model.named_parameters()}  # the time is the same for any values
    anchor = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in model.named_parameters()}
    penalty = QuadraticPenalty(strength=1.0)
    penalty.add(importance, anchor)
    del importance, anchor
    _check(model, penalty, x, y)
    sides: dict[str, tuple[Any, QuadraticPenalty | None]] = {
        "torch Adam, naive": (torch.optim.Adam(params, lr=1e-4), None),
        "torch Adam, EWC (add_gradient_)": (torch.optim.Adam(params, lr=1e-4), penalty),
        "compiled Adam, naive": (CompiledAdam(params, lr=1e-4), None),
        "compiled Adam, EWC folded in": (_folded(params, model, 1e-4, penalty), None),
    }
    for opt, q in sides.values():  # warm-up: state allocated, kernels compiled
        _step(model, opt, x, y, q)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(steps):  # in turn, so that a burst of load on the machine hits every side
        for name, (opt, q) in sides.items():
            seconds[name].append(_step(model, opt, x, y, q))
    fastest = {name: min(s) for name, s in seconds.items()}
    update = {}  # the update alone on the last gradients, fastest of `steps`: less noise than whole steps
    for name, (opt, q) in sides.items():
        def once(opt: Any = opt, q: QuadraticPenalty | None = q) -> None:
            if q is not None:
                q.add_gradient_(model)
            opt.step()
        update[name] = _fastest(once, steps)
    return {"size": size, "parameters": sum(p.numel() for p in params), "batch": batch,
            "tokens_per_step": batch * LENGTH, "steps": steps, "step_seconds": seconds,
            "update_seconds": update,
            "step_ratio_library": fastest["torch Adam, EWC (add_gradient_)"] / fastest["torch Adam, naive"],
            "step_ratio_folded": fastest["compiled Adam, EWC folded in"] / fastest["compiled Adam, naive"],
            "step_ratio_folded_median": (torch.tensor(seconds["compiled Adam, EWC folded in"]).median() /
                                         torch.tensor(seconds["compiled Adam, naive"]).median()).item(),
            "compiled_to_torch_naive": fastest["compiled Adam, naive"] / fastest["torch Adam, naive"],
            "threads": torch.get_num_threads()}
