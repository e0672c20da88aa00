"""Orthogonal LoRA: a fresh LoRA adapter per task, kept orthogonal to the earlier tasks' adapters.

After Wang et al. 2023, "Orthogonal subspace learning for language model continual learning" (O-LoRA),
with a projected variant in the spirit of Liang & Li 2024 (InfLoRA). The model must carry peft LoRA
adapters (`--encoder lora`, `lifelong.models.text.with_lora`); its base weights are frozen.

For each task t, per adapted layer (y = W x + s B A x, A: [r, in], B: [out, r], s the LoRA scale):
- before the task (after the first one): A is drawn afresh (peft's own init) and B set to zero;
- while it trains, A_t is kept orthogonal to U, an orthonormal basis of the rows of every earlier A_i:
  ``mode="loss"``: O-LoRA's loss, ``orth_weight * sum |A_t U|`` (all entries, all layers), added to
  the batch loss; ``mode="project"``: A_t starts in the complement of span(U) and its gradient is projected
  off span(U) after backward; the step is projected again after the optimizer (Adam rescales the
  gradient elementwise, which would move it back into span(U)), so A_t U stays 0 to float precision;
  ``mode="inputs"``: as "project", and U also holds the directions that carry `threshold` of the
  energy of the layer's inputs on the earlier tasks (GPM's bases, Saha et al. 2021, from `samples`
  training samples), so that B_t A_t x ~ 0 for an earlier task's input x: the InfLoRA idea of a new
  adapter that cannot reach the earlier tasks' inputs (InfLoRA derives A from their gradient space and
  then freezes it; here A trains inside the complement). At least r directions are always left free;
- after the task, the adapter is folded into the frozen base weight, W <- W + s B A, and B set to zero:
  the model computes the same outputs, inference needs no adapter, and the earlier tasks' updates are
  frozen; A_t's rows join U.

Why it can help: the update of task t, s B_t A_t, reads only the directions of the layer's input that
A_t spans; kept apart from the earlier tasks' directions, it leaves their update's input directions to
them (O-LoRA's argument; it does not make B_t A_t x = 0 on the earlier tasks' inputs x). Every other
trainable parameter (a head) trains as under naive fine-tuning. Not done from the papers: O-LoRA's L2
term on the new adapter (lambda_2) and InfLoRA's choice of A from the earlier tasks' gradient subspace.

State: U per layer (float32, in x r*tasks), saved and loaded with the model; compose with replay as
``olora+replay``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.importance.estimate import collect_inputs
from lifelong.strategies.base import Strategy, StrategyConfig
from lifelong.strategies.gpm import extend_basis

MODES = ("loss", "project", "inputs")


@dataclass
class OLoRAConfig(StrategyConfig):
    mode: str = "project"  # "loss": O-LoRA's orthogonality loss; "project": A kept in the complement exactly
    orth_weight: float = 0.5  # mode="loss": lambda_1 on sum |A_t U| (O-LoRA's default 0.5)
    threshold: float = 0.9  # mode="inputs": share of each earlier task's input energy kept out of A's reach
    samples: int = 300  # mode="inputs": training samples whose layer inputs give that subspace

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.orth_weight < 0:
            raise ValueError(f"orth_weight must be >= 0, not {self.orth_weight}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], not {self.threshold}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, not {self.samples}")


def lora_layers(model: nn.Module) -> dict[str, Any]:
    """The model's peft LoRA layers (modules with `lora_A`, `lora_B`, `scaling` and one active adapter;
    typed Any: peft's LoraLayer is duck-typed here, so the strategy imports peft nowhere)."""
    found = {}
    for name, module in model.named_modules():
        if not all(hasattr(module, a) for a in ("lora_A", "lora_B", "scaling", "base_layer")):
            continue
        active = [a for a in getattr(module, "active_adapters", []) if a in module.lora_A]
        if len(active) != 1:
            raise ValueError(f"olora needs exactly one active LoRA adapter per layer; {name} has {active}")
        found[name] = module
    return found


def _adapter(module: Any) -> tuple[Tensor, Tensor, float]:
    """The (A weight [r, in], B weight [out, r], scale) of a LoRA layer's active adapter."""
    name = module.active_adapters[0]
    return module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name])


def extend_span(basis: Tensor | None, rows: Tensor, tol: float = 1e-6) -> Tensor:
    """An orthonormal basis [in, k'] of span(basis) + span(rows' rows); rows: [r, in]. Directions of
    `rows` already inside span(basis) (up to `tol` of their norm) add nothing."""
    cols = rows.detach().double().T
    u = basis.double() if basis is not None else cols.new_zeros(cols.shape[0], 0)
    residual = cols - u @ (u.T @ cols)
    vectors, values, _ = torch.linalg.svd(residual, full_matrices=False)
    scale = max(float(cols.norm()), 1e-30)
    new = vectors[:, values > tol * scale]
    new = new - u @ (u.T @ new)  # once more against rounding
    return torch.cat([u, new], 1).float().contiguous()


class OLoRA(Strategy):
    """Orthogonal LoRA: one adapter per task, folded into the base weights after it, A kept orthogonal."""

    name = "olora"

    def __init__(self, config: OLoRAConfig | None = None):
        self.config = config or OLoRAConfig()
        self.bases: dict[str, Tensor] = {}  # layer -> orthonormal [in, k]: the rows of the earlier tasks' A
        self.tasks = 0  # adapters folded so far

    def _layers(self, model: nn.Module) -> dict[str, Any]:
        layers = lora_layers(model)
        if not layers:
            raise ValueError("olora needs a model with LoRA adapters (peft), e.g. --encoder lora; this model has "
                             "none. Use ewc or online-kfac-ewc to protect a fully trained network.")
        return layers

    def _basis(self, name: str, weight: Tensor) -> Tensor | None:
        u = self.bases.get(name)
        if u is None or u.shape[1] == 0:
            return None
        return u.to(device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def before_task(self, model: nn.Module, task_id: int) -> None:
        layers = self._layers(model)
        if self.tasks == 0:
            return  # the adapter peft made (A random, B zero) learns the first task
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.tasks)
        for name, module in layers.items():
            a, b, _ = _adapter(module)
            # peft's init of A (kaiming uniform, a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))), from our own generator
            bound = 1 / math.sqrt(a.shape[1])
            a.copy_((torch.rand(a.shape, generator=gen) * 2 - 1) * bound)
            b.zero_()
            u = self._basis(name, a)
            if self.config.mode != "loss" and u is not None:
                if u.shape[1] + a.shape[0] > u.shape[0]:
                    raise ValueError(f"olora: layer {name} has {u.shape[0]} input directions, {u.shape[1]} taken by "
                                     f"earlier tasks; no room left for a rank-{a.shape[0]} adapter")
                a.sub_((a @ u) @ u.T)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.config.mode != "loss" or not self.bases or self.config.orth_weight == 0:
            return None
        total = logits.new_zeros(())
        for name, module in self._layers(model).items():
            a, _, _ = _adapter(module)
            u = self._basis(name, a)
            if u is not None:
                total = total + (a @ u).abs().sum()
        return self.config.orth_weight * total

    def penalty(self, model: nn.Module) -> Tensor:
        """O-LoRA's loss term (mode "loss"); for the projecting modes, sum |A_t U| (0 up to rounding) unweighted."""
        with torch.no_grad():
            total = torch.zeros(())
            for name, module in self._layers(model).items():
                a, _, _ = _adapter(module)
                u = self._basis(name, a)
                if u is not None:
                    total = total + (a @ u).abs().sum().cpu()
        return total * (self.config.orth_weight if self.config.mode == "loss" else 1.0)

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        if self.config.mode == "loss" or not self.bases:
            return
        for name, module in self._layers(model).items():
            a, _, _ = _adapter(module)
            u = self._basis(name, a)
            if a.grad is not None and u is not None:
                a.grad.sub_((a.grad @ u) @ u.T)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        # the optimizer's step, not only the gradient: Adam's elementwise scaling leaves span(U)'s complement
        if self.config.mode == "loss" or not self.bases:
            return
        for name, module in self._layers(model).items():
            a, _, _ = _adapter(module)
            u = self._basis(name, a)
            if u is not None:
                a.sub_((a @ u) @ u.T)

    @torch.no_grad()
    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        layers = self._layers(model)
        inputs = self._inputs(model, layers, batches) if self.config.mode == "inputs" else {}
        for name, module in layers.items():
            fold(module)
            a, _, _ = _adapter(module)
            u = extend_span(self.bases.get(name), a.cpu())
            if name in inputs:
                u, _ = extend_basis(u, inputs[name], self.config.threshold)
                u = u[:, : u.shape[0] - a.shape[0]]  # the weakest directions go: r stay free for the next adapter
            self.bases[name] = u
        self.tasks += 1

    def _inputs(self, model: nn.Module, layers: dict[str, Any], batches: Iterable[Any]) -> dict[str, Tensor]:
        """Each adapted layer's inputs [n, in] (every token position) on `samples` of the task's samples."""
        seen = collect_inputs(model, layers, batches, self.config.samples,
                              lambda n, m, x: x.detach().reshape(-1, x.shape[-1]).cpu())
        return {n: torch.cat(x) for n, x in seen.items() if x}

    def protection(self) -> list[dict[str, Any]]:
        """Per adapted layer: how many input directions the earlier tasks' A rows span, and the share."""
        return [{"layer": n, "form": "orthogonal-lora", "basis": u.shape[1], "size": u.shape[0],
                 "input_space_share": u.shape[1] / u.shape[0], "state_bytes": u.nbytes}
                for n, u in self.bases.items()]

    def state_dict(self) -> dict[str, Any]:
        return {"bases": dict(self.bases), "tasks": self.tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bases = {n: u.clone() for n, u in state["bases"].items()}
        self.tasks = int(state["tasks"])


@torch.no_grad()
def fold(module: Any) -> None:
    """Add a LoRA layer's adapter into its base weight (W <- W + s B A) and zero B: same outputs, and the
    update is frozen with the base weights. A keeps its values (it is read into the basis)."""
    _, b, _ = _adapter(module)
    base = module.base_layer.weight
    base.add_(module.get_delta_weight(module.active_adapters[0]).to(base.dtype))
    b.zero_()
