"""One quadratic penalty for every importance-based method (EWC, online EWC, SI, MAS).

The methods differ only in how importance is estimated and decayed. Their penalty is always

    strength / 2 * sum_i P_i (theta_i - m_i)^2 + strength / 2 * r

with a precision P, a centre m and a constant r, whatever the number of tasks. A sum of per-task
quadratics merges exactly into that form:

    a (x - u)^2 + b (x - v)^2 = (a + b) (x - w)^2 + ab / (a + b) (u - v)^2,  w = (a u + b v) / (a + b)

so EWC with one penalty per earlier task (Kirkpatrick et al. 2017) costs one penalty in memory and
in time. Training never builds an autograd graph for it: `add_gradient_` adds
strength * (P * theta - P * m) to `.grad` after backward, in two fused passes.

Storage (`storage=`), all exact in the same penalty up to their rounding:
- ``fp32`` (default): P and c = P * m, two floats per parameter;
- ``bf16``: P in bfloat16 and m in float32, 6 bytes per parameter;
- ``keep < 1``: only the largest `keep` share of P's entries per tensor (indices, P and m), the
  rest of the parameters unprotected.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.strategies.base import StrategyConfig

STORAGES = ("fp32", "bf16")


def _local(t: Tensor) -> Tensor:
    """This rank's shard of a parameter-like tensor (an FSDP DTensor), else the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _shard_like(full: Tensor, like: Tensor) -> Tensor:
    """A plain full-shape tensor cut into this rank's shard the way FSDP cut the parameter `like`, so
    that under FSDP the state is kept per rank exactly like the parameters (<= 2 floats per local one)."""
    if hasattr(full, "to_local"):
        return full.to_local()
    if not hasattr(like, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements).to_local()  # type: ignore[attr-defined]


# Elements a chunk on the CPU: theta - m then lives in cache between its two uses instead of a fresh
# parameter-sized tensor (bf16 storage at gpt-100m: 1.5 ns a parameter against 3.4-4.5 unchunked; the
# best of 2^15 to 2^18, `benchmarks/lm_cost.py penalty`).
_CHUNK = 1 << 16


def _add_in_chunks_(grad: Tensor, value: Tensor, centre: Tensor, precision: Tensor, lam: float,
                    scratch: Tensor) -> None:
    """grad += lam * precision * (value - centre) over flat tensors, one cache-sized chunk at a time."""
    for start in range(0, grad.numel(), _CHUNK):
        end = min(start + _CHUNK, grad.numel())
        diff = scratch[: end - start]
        torch.sub(value[start:end], centre[start:end], out=diff)
        grad[start:end].addcmul_(diff, precision[start:end], value=lam)


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

    def __init__(self, strength: float, storage: str = "fp32", keep: float = 1.0):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1], not {keep}")
        self.strength, self.storage, self.keep = float(strength), storage, keep
        self.names: list[str] = []
        self.shapes: list[torch.Size] = []
        self.slots: list[dict[str, Tensor]] = []  # per parameter, as the storage decides
        self.residual = 0.0  # the penalty's minimum value: constant in theta, kept so values are exact
        self._bound: tuple[int, list[nn.Parameter]] | None = None

    @property
    def empty(self) -> bool:
        return not self.names

    # -- storage: dense float32 (precision, centre) in, the chosen format kept -------------------------
    def _store(self, precision: Tensor, centre: Tensor) -> dict[str, Tensor]:
        if self.keep < 1:
            flat = precision.flatten()
            k = max(1, math.ceil(self.keep * flat.numel()))
            index = torch.topk(flat, k, sorted=False).indices
            if flat.numel() < 2**31:
                index = index.to(torch.int32)  # 12 bytes per kept entry instead of 16
            value = flat[index].to(torch.bfloat16 if self.storage == "bf16" else torch.float32)
            return {"index": index, "precision": value, "centre": centre.flatten()[index].clone()}
        if self.storage == "bf16":
            return {"precision": precision.to(torch.bfloat16), "centre": centre.clone()}
        return {"precision": precision.clone(), "weighted_centre": precision * centre}

    def dense(self, i: int) -> tuple[Tensor, Tensor]:
        """(precision, centre) of parameter i as dense float32 tensors (the centre is 0 where P is 0)."""
        slot, shape = self.slots[i], self.shapes[i]
        if "index" in slot:
            device = slot["index"].device
            p = torch.zeros(shape.numel(), dtype=torch.float32, device=device)
            m = torch.zeros(shape.numel(), dtype=torch.float32, device=device)
            p[slot["index"]] = slot["precision"].float()
            m[slot["index"]] = slot["centre"]
            return p.reshape(shape), m.reshape(shape)
        p = slot["precision"].float()
        if "weighted_centre" in slot:
            return p, torch.where(p > 0, slot["weighted_centre"] / torch.where(p > 0, p, 1.0), 0.0)
        return p, slot["centre"]

    @property
    def precision(self) -> list[Tensor]:
        return [self.dense(i)[0] for i in range(len(self.names))]

    @property
    def centre(self) -> list[Tensor]:
        return [self.dense(i)[1] for i in range(len(self.names))]

    def nbytes(self) -> int:
        return sum(t.nbytes for slot in self.slots for t in slot.values())

    # -- merging tasks -----------------------------------------------------------------------------------
    @staticmethod
    def _localise(importance: dict[str, Tensor], anchor: dict[str, Tensor]) -> tuple[dict, dict]:
        """Importance and anchors as this rank's shards (no-op without FSDP)."""
        return ({n: _shard_like(v.detach(), anchor[n]) for n, v in importance.items()},
                {n: _local(anchor[n].detach()) for n in importance})

    def _start(self, importance: dict[str, Tensor], anchor: dict[str, Tensor]) -> None:
        self.names = list(importance)
        self.shapes = [importance[n].shape for n in self.names]
        self.slots = [self._store(importance[n].detach().float(), anchor[n].detach().float()) for n in self.names]
        self.residual = 0.0
        self._bound = None

    def _merging(self, importance: dict[str, Tensor], anchor: dict[str, Tensor]) -> tuple[dict, dict] | None:
        """Importance and anchors ready to merge into the stored quadratic: this rank's shards, checked
        against the stored parameters, the stored tensors grown to new shapes. None when the penalty
        was empty: the first task's quadratic is then simply stored."""
        importance, anchor = self._localise(importance, anchor)
        if self.empty:
            self._start(importance, anchor)
            return None
        if list(importance) != self.names:
            raise ValueError("importance covers other parameters than the penalty: "
                             f"{sorted(set(importance) ^ set(self.names))[:5]}")
        for i, n in enumerate(self.names):  # an output layer that gained classes since
            if importance[n].shape != self.shapes[i]:
                self._grow(i, importance[n])
        return importance, anchor

    def add(self, importance: dict[str, Tensor], anchor: dict[str, Tensor], decay: float = 1.0) -> None:
        """Add importance * (theta - anchor)^2 to decay * (the current quadratic), merged exactly."""
        merging = self._merging(importance, anchor)
        if merging is None:
            return
        importance, anchor = merging
        residual = decay * self.residual
        for i, n in enumerate(self.names):
            p, u = self.dense(i)
            a, b = decay * p, importance[n].detach().float()
            v = anchor[n].detach().float()
            total = a + b
            safe = torch.where(total > 0, total, 1.0)
            residual += float((a * b / safe * (u - v) ** 2).sum(dtype=torch.float64))
            self.slots[i] = self._store(total, torch.where(total > 0, (a * u + b * v) / safe, v))
        self.residual = residual

    def accumulate(self, importance: dict[str, Tensor], anchor: dict[str, Tensor], decay: float = 1.0) -> None:
        """precision <- decay * precision + importance, centred on `anchor` alone (the latest
        parameters): the online form of Schwarz et al. 2018, and SI's and MAS's own rule."""
        merging = self._merging(importance, anchor)
        if merging is None:
            return
        importance, anchor = merging
        for i, n in enumerate(self.names):
            p = self.dense(i)[0]
            self.slots[i] = self._store(decay * p + importance[n].detach().float(), anchor[n].detach().float())
        self.residual = 0.0

    # -- using it --------------------------------------------------------------------------------------
    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        if self._bound is None or self._bound[0] != id(model) or any(
                _local(p).shape != s for p, s in zip(self._bound[1], self.shapes, strict=True)):
            named = dict(model.named_parameters())
            missing = [n for n in self.names if n not in named]
            if missing:
                raise ValueError(f"the model has no parameter(s) {missing[:5]} that this penalty protects")
            params = [named[n] for n in self.names]
            for i, p in enumerate(params):
                if _local(p).shape != self.shapes[i]:
                    self._grow(i, _local(p))
            self._bound = (id(model), params)
        return self._bound[1]

    def _grow(self, i: int, param: Tensor) -> None:
        """A parameter that grew along its first dimension (an output layer with new classes): its new
        rows get zero precision (nothing learned yet to protect)."""
        old = self.shapes[i]
        if param.dim() != len(old) or param.shape[1:] != old[1:] or param.shape[0] < old[0]:
            raise ValueError(f"parameter {self.names[i]} has shape {tuple(param.shape)}; the penalty was built for "
                             f"{tuple(old)} (only growth along the first dimension is supported)")
        p, m = self.dense(i)
        extra = (param.shape[0] - old[0], *old[1:])
        self.shapes[i] = param.shape
        self.slots[i] = self._store(torch.cat([p, p.new_zeros(extra)]), torch.cat([m, m.new_zeros(extra)]))

    def value(self, model: nn.Module) -> Tensor:
        """The penalty, differentiable in the model's parameters."""
        if self.empty:
            return torch.zeros(())
        params = self._params(model)
        total = torch.zeros((), device=params[0].device if params else None)
        for i, param in enumerate(params):
            p, m = self.dense(i)
            total = total + ((_local(param) - m) ** 2 * p).sum()
        if any(hasattr(p, "to_local") for p in params):  # FSDP: every rank holds a shard of the sum
            from lifelong.distributed import all_reduce_sum_

            total = total.detach()
            all_reduce_sum_([total])
        return 0.5 * self.strength * (total + self.residual)

    @torch.no_grad()
    def add_gradient_(self, model: nn.Module) -> None:
        """grad += strength * P * (theta - m), without an autograd graph."""
        if self.empty or self.strength == 0:
            return
        params = self._params(model)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        lam = self.strength
        grads: list[Tensor] = [_local(p.grad) for p in params]  # type: ignore[arg-type]
        values = [_local(p.detach()) for p in params]
        if self.keep == 1 and self.storage == "fp32":  # the default: two fused passes over all tensors
            torch._foreach_addcmul_(grads, [s["precision"] for s in self.slots], values, value=lam)
            torch._foreach_add_(grads, [s["weighted_centre"] for s in self.slots], alpha=-lam)
            return
        scratch: Tensor | None = None
        for g, v, slot in zip(grads, values, self.slots, strict=True):
            if "index" in slot:
                update = (v.view(-1)[slot["index"]] - slot["centre"]) * slot["precision"]
                g.view(-1).index_add_(0, slot["index"], update, alpha=lam)
            elif g.device.type == "cpu" and g.is_contiguous() and v.is_contiguous():
                if scratch is None:
                    scratch = torch.empty(_CHUNK, dtype=torch.float32)
                _add_in_chunks_(g.view(-1), v.view(-1), slot["centre"].view(-1), slot["precision"].view(-1),
                                lam, scratch)
            else:
                g.add_((v - slot["centre"]) * slot["precision"], alpha=lam)

    def state_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "storage": self.storage, "keep": self.keep, "names": list(self.names),
                "shapes": [list(s) for s in self.shapes], "slots": [dict(s) for s in self.slots],
                "residual": self.residual}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strength, self.storage, self.keep = float(state["strength"]), state["storage"], float(state["keep"])
        self.names = list(state["names"])
        self.shapes = [torch.Size(s) for s in state["shapes"]]
        self.slots = [{k: v.clone() for k, v in s.items()} for s in state["slots"]]
        self.residual = float(state["residual"])
        self._bound = None


@dataclass
class ConsolidationConfig(StrategyConfig):
    """Options every importance-based method shares."""

    strength: float = 1.0  # lambda: the penalty is strength / 2 * sum_i P_i (theta_i - m_i)^2
    storage: str = "fp32"  # "fp32" or "bf16" (precision kept in bfloat16)
    keep: float = 1.0  # share of each tensor's largest importances kept (1: all; 0.01: the top 1 %)

    def __post_init__(self) -> None:
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0, not {self.strength}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, not {self.storage!r}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], not {self.keep}")


class Consolidation:
    """What EWC, online EWC, SI and MAS share: one `QuadraticPenalty` whose gradient is added
    after backward. Each method only decides the importance and how it merges (`add` for EWC's
    sum over tasks, `accumulate` for the online rule)."""

    def __init__(self, config: ConsolidationConfig):
        self.quadratic = QuadraticPenalty(config.strength, config.storage, config.keep)
        self._folded_into: weakref.ref | None = None

    def fold_into(self, optimizer: Any, model: nn.Module) -> bool:
        """Hand the penalty's gradient to `optimizer` (a `lifelong.optim.CompiledAdam`), which adds it
        inside its own update, one pass instead of three; `after_backward` then adds nothing for as
        long as that optimizer lives. Any other optimizer (or None) takes the penalty back. Returns
        whether it was folded: only the dense fp32 storage is."""
        from lifelong.optim import CompiledAdam, foldable

        self._folded_into = None
        if not isinstance(optimizer, CompiledAdam) or not foldable(self.quadratic):
            return False
        optimizer.fold(self.quadratic, model)
        self._folded_into = weakref.ref(optimizer)
        return True

    def after_backward(self, model: nn.Module) -> None:
        if self._folded_into is None or self._folded_into() is None:
            self.quadratic.add_gradient_(model)

    def penalty(self, model: nn.Module) -> Tensor:
        return self.quadratic.value(model)

    def state_dict(self) -> dict[str, Any]:
        return {"quadratic": self.quadratic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.quadratic.load_state_dict(state["quadratic"])
