"""Gradient projection memory (Saha, Garg & Roy 2021, "Gradient projection memory for continual learning").

After each task, per Linear and Conv2d layer, the inputs a~ (with a bias column; unfolded patches for
Conv2d) of `samples` training samples span a subspace; its top eigenvectors that explain `threshold`
of the energy (counting what the stored basis already explains) join an orthonormal basis M. While
later tasks train, each layer's gradient of [W b] loses its part in span(M): g <- g - (g M) M^T.
Outputs of earlier tasks' inputs then do not change to first order under SGD, without stored data.

Adam breaks that guarantee: it divides the projected gradient's running mean elementwise by a running
scale, which moves the step back into span(M). `project="update"` (the default) keeps it for any
optimizer by projecting the step itself (the parameter change the optimizer made) instead; under plain
or momentum SGD both are the same. `drift` reports, per layer and task, the share of the task's weight
change that fell inside the protected subspace (docs/consolidation.md measures both under Adam).
Other layers (LayerNorm, Embedding, ...) are not protected; `protection()` lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.importance.estimate import _owners, collect_inputs
from lifelong.importance.kronecker import factorable, has_bias, layer_inputs, layer_matrix, weight_and_bias
from lifelong.strategies.base import Strategy, StrategyConfig

PROJECTIONS = ("gradient", "update")


@dataclass
class GPMConfig(StrategyConfig):
    threshold: float | list[float] = 0.97  # energy share per layer (one value, or one per layer in order)
    threshold_step: float = 0.0  # raised by this much per task (Saha et al. on CIFAR: 0.003)
    samples: int = 300  # training samples whose inputs give each task's subspace (the paper's 300)
    # "update" (the default): project the optimizer's step, which keeps the guarantee under Adam; "gradient":
    # project the gradient before the step, as the paper (the same thing under plain or momentum SGD)
    project: str = "update"

    def __post_init__(self) -> None:
        values = self.threshold if isinstance(self.threshold, list) else [self.threshold]
        if not values or any(not 0 < float(t) <= 1 for t in values):
            raise ValueError(f"threshold must be in (0, 1] (one value or one per layer), not {self.threshold}")
        if not 0 <= self.threshold_step < 1:
            raise ValueError(f"threshold_step must be in [0, 1), not {self.threshold_step}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, not {self.samples}")
        if self.project not in PROJECTIONS:
            raise ValueError(f"project must be one of {PROJECTIONS}, not {self.project!r}")


def extend_basis(basis: Tensor | None, inputs: Tensor, threshold: float) -> tuple[Tensor, float]:
    """The basis grown by the fewest top eigenvectors of the inputs' energy outside it that bring the share
    of the inputs' energy it explains to `threshold`; returns (basis, share explained). inputs: [n, d]."""
    x = inputs.double()
    energy = x.T @ x
    total = float(energy.trace())
    if total == 0:
        return (basis if basis is not None else x.new_zeros(x.shape[1], 0).float()), 1.0
    explained = 0.0
    if basis is not None and basis.shape[1]:
        m = basis.double()
        inside = m.T @ energy @ m
        explained = float(inside.trace()) / total
        outside = energy - m @ (m.T @ energy) - (energy @ m) @ m.T + m @ inside @ m.T  # (I - MM^T) E (I - MM^T)
    else:
        m, outside = x.new_zeros(x.shape[1], 0), energy
    values, vectors = torch.linalg.eigh(outside)
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    room = x.shape[1] - m.shape[1]
    shares = values[:room] / total
    k = 0
    while k < len(shares) and explained < threshold and shares[k] > 0:
        explained += float(shares[k])
        k += 1
    if k == 0:
        return (basis if basis is not None else m.float()), explained
    grown, _ = torch.linalg.qr(torch.cat([m, vectors[:, :k]], 1))  # re-orthonormalised against rounding
    return grown.float().contiguous(), min(explained, 1.0)


class GPM(Strategy):
    """Gradient projection memory over every Linear and Conv2d layer."""

    name = "gpm"

    def __init__(self, config: GPMConfig | None = None):
        self.config = config or GPMConfig()
        self.bases: dict[str, Tensor] = {}  # layer -> orthonormal [in~, k]
        self.bias: dict[str, bool] = {}
        self.explained: dict[str, float] = {}  # share of the latest task's input energy the basis explains
        self.drift: dict[str, list[float]] = {}  # per layer and task: share of the weight change inside span(M)
        self.unprotected: list[str] = []
        self.tasks = 0
        self._start: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}
        self._projectors: dict[str, tuple[bool, Tensor]] = {}  # derived from the bases

    def _layers(self, model: nn.Module) -> dict[str, nn.Module]:
        modules = dict(model.named_modules())
        return {n: modules[n] for n in self.bases}

    def _project(self, name: str, g: Tensor) -> Tensor:
        """g without its part in span(M): g - g M M^T, or g C C^T with C a basis of the complement when
        that is the thinner one (a layer whose basis holds most of its input space)."""
        if name not in self._projectors:
            m = self.bases[name]
            if 2 * m.shape[1] <= m.shape[0]:
                self._projectors[name] = (False, m)
            else:
                outside = torch.eye(m.shape[0], dtype=torch.float64, device=m.device) - m.double() @ m.double().T
                values, vectors = torch.linalg.eigh(outside)
                self._projectors[name] = (True, vectors[:, values > 0.5].float().contiguous())
        complement, b = self._projectors[name]
        return (g @ b) @ b.T if complement else g - (g @ b) @ b.T

    def before_task(self, model: nn.Module, task_id: int) -> None:
        self._start = {n: layer_matrix(*weight_and_bias(mod, self.bias[n])).detach().clone()
                       for n, mod in self._layers(model).items()}

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        if self.config.project == "update":  # remember the parameters; the step is projected after it
            self._before = {n: layer_matrix(*weight_and_bias(mod, self.bias[n])).clone()
                            for n, mod in self._layers(model).items()}
            return
        for name, module in self._layers(model).items():
            weight, bias = weight_and_bias(module, self.bias[name])
            if weight.grad is None or self.bases[name].shape[1] == 0:
                continue
            if bias is not None and bias.grad is None:
                bias.grad = torch.zeros_like(bias)
            grad = layer_matrix(weight.grad, bias.grad if bias is not None else None)
            self._write(weight.grad, bias.grad if bias is not None else None, self._project(name, grad))

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        if self.config.project != "update" or not self._before:
            return
        for name, module in self._layers(model).items():
            weight, bias = weight_and_bias(module, self.bias[name])
            before = self._before[name]
            step = layer_matrix(weight, bias) - before
            self._write(weight, bias, before + self._project(name, step))
        self._before = {}

    @staticmethod
    def _write(weight: Tensor, bias: Tensor | None, matrix: Tensor) -> None:
        cols = weight[0].numel()
        weight.copy_(matrix[:, :cols].reshape(weight.shape))
        if bias is not None:
            bias.copy_(matrix[:, cols])

    def _threshold(self, index: int) -> float:
        t = self.config.threshold
        base = float(t[min(index, len(t) - 1)]) if isinstance(t, list) else float(t)
        return min(1.0, base + self.tasks * self.config.threshold_step)

    @torch.no_grad()
    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        modules = dict(_owners(model))
        found = {n: factorable(m) for n, m in modules.items()}
        kinds = {n: k for n, k in found.items() if k is not None}
        layers = list(kinds)
        self.unprotected = [n for n, k in found.items() if k is None]
        for name in layers:  # what the task did inside the subspace protected while it trained
            if name in self._start and name in self.bases and self.bases[name].shape[1]:
                change = layer_matrix(*weight_and_bias(modules[name], self.bias[name])) - self._start[name]
                inside = float((change @ self.bases[name]).norm() ** 2)
                self.drift.setdefault(name, []).append(inside / max(float(change.norm() ** 2), 1e-30))
        inputs = collect_inputs(model, {n: modules[n] for n in layers}, batches, self.config.samples,
                                lambda n, m, x: layer_inputs(m, kinds[n], x, has_bias(m)).flatten(0, 1))
        for index, name in enumerate(layers):
            if not inputs[name]:
                continue
            self.bias[name] = has_bias(modules[name])
            self.bases[name], self.explained[name] = extend_basis(self.bases.get(name), torch.cat(inputs[name]),
                                                                  self._threshold(index))
        self.tasks += 1
        self._projectors = {}

    def protection(self) -> list[dict[str, Any]]:
        """Per layer: the protected share of its input space and of the latest task's input energy."""
        rows = []
        for name, m in self.bases.items():
            rows.append({"layer": name, "form": "projection", "basis": m.shape[1], "size": m.shape[0],
                         "input_space_share": m.shape[1] / m.shape[0], "energy_explained": self.explained.get(name),
                         "drift": self.drift.get(name, []), "state_bytes": m.nbytes})
        rows += [{"layer": n, "form": "unprotected", "state_bytes": 0} for n in self.unprotected]
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"bases": dict(self.bases), "bias": dict(self.bias), "explained": dict(self.explained),
                "drift": {n: list(v) for n, v in self.drift.items()}, "unprotected": list(self.unprotected),
                "tasks": self.tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bases = {n: m.clone() for n, m in state["bases"].items()}
        self.bias, self.explained = dict(state["bias"]), dict(state["explained"])
        self.drift = {n: list(v) for n, v in state["drift"].items()}
        self.unprotected, self.tasks = list(state["unprotected"]), int(state["tasks"])
        self._start, self._before, self._projectors = {}, {}, {}


