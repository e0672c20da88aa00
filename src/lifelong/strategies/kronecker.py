"""A Kronecker-factored quadratic penalty, merged over tasks with flat state and step cost.

Per factored layer (weight and bias as one matrix W~ [out, in~]) the penalty is

    strength / 2 * ( <D, s G D A> + 2 <c, D> + r ),   D = W~ - W*

with the precision s * A (x) G, the latest anchor W*, a force c (the pull of earlier tasks' anchors,
zero in the online form) and a constant r. Its gradient, strength * (s G D A + c), is added after
backward in closed form (two matrix products per layer, no autograd graph). Other parameters go to a
diagonal `QuadraticPenalty`.

Adding a task t (factors A_t, G_t at its solution W_t) re-expresses the stored quadratic around W_t
exactly (d = W_t - W*: c <- decay * (s G d A + c), r <- decay * (r + 2 <c, d> + <d, s G d A>)), so the
sum over tasks of (W~ - W_t)^T (A_t (x) G_t) (W~ - W_t) is kept exactly but for one step: the sum of the
precisions, which is not a Kronecker product. Two merges (`merge=`), both two matrices per layer:

- ``nearest`` (default): the Kronecker product nearest in Frobenius norm to decay * (s A (x) G) +
  A_t (x) G_t (Van Loan & Pitsianis 1993: the best rank-1 approximation of a rank-2 matrix, solved
  in a 2 x 2 problem); each merge is optimal, the sequence of merges greedy;
- ``sum``: summed factors, (sum_t w_t A_t) (x) (sum_t w_t G_t) / sum_t w_t (w_t = decay^(T-t)); exact
  when the tasks' factors are proportional; it adds the cross terms A_s (x) G_t.

tests/test_kronecker.py and docs/consolidation.md measure both against the exact sum of per-task
Kronecker penalties. `energy < 1` keeps of each factor the eigenvectors holding that share of its trace
and replaces the rest by one isotropic level (their mean eigenvalue, so the trace is kept whole), for
the step only (the stored factors stay whole): a cheaper gradient of a penalty that still resists
every direction (`protection()` reports the ranks and the share of curvature in exact directions).
`rank` caps the eigenvectors kept per factor (with the same tail), so the step's cost stays flat even
when merged factors fill their space (after many tasks an energy share needs ever more directions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.devices import model_device
from lifelong.importance.kronecker import LayerFactors, layer_matrix, weight_and_bias
from lifelong.strategies.quadratic import QuadraticPenalty

MERGES = ("nearest", "sum")


@dataclass
class _Step:
    """A layer's step. The penalty's gradient is linear in W~: strength * (G W~ A + const), with
    const = c - G W* A computed once per task, so the anchor is not read at each step. Dense: g = G,
    a = s A. Cheaper (`energy` < 1 or `rank`): each factor as its top eigenvectors plus an isotropic tail,
    A ~ U diag(la) U^T + sigma I and G ~ V diag(lg) V^T + tau I (la, lg: the kept eigenvalues less the
    tail's mean level, so the trace is kept whole); g = V, a = U."""

    g: Tensor
    a: Tensor
    const: Tensor  # c - G W* A with the factors as the step applies them  [out, in~]; truncated: [out, cols]
    lg: Tensor | None = None
    la: Tensor | None = None
    tau: float = 0.0
    sigma: float = 0.0
    # the truncated step's operands, laid out once so that every product reads contiguous memory
    u_w_t: Tensor | None = None  # U's rows for the weight's columns, transposed  [kA, cols]
    g_t: Tensor | None = None  # V^T  [kG, out]
    scale_t: Tensor | None = None  # lg la^T  [kG, kA]
    tau_la: Tensor | None = None  # tau la  [kA]
    g_side: Tensor | None = None  # sigma V diag(lg)  [out, kG]
    const_b: Tensor | None = None  # const's bias column  [out] (truncated; `const` then holds the rest)

    def dense(self) -> tuple[Tensor, Tensor]:
        """(G, A) as the step applies them."""
        if self.la is None or self.lg is None:
            return self.g, self.a
        return _dense(self.g, self.lg, self.tau), _dense(self.a, self.la, self.sigma)


def _dense(vectors: Tensor, values: Tensor, tail: float) -> Tensor:
    """V diag(values) V^T + tail I."""
    eye = torch.eye(vectors.shape[0], device=vectors.device, dtype=vectors.dtype)
    return (vectors * values) @ vectors.T + tail * eye


def nearest_kronecker(a: list[Tensor], g: list[Tensor], weights: list[float]) -> tuple[Tensor, Tensor]:
    """(A, G) minimising || A (x) G - sum_i w_i a_i (x) g_i ||_F for a few terms (Van Loan & Pitsianis):
    the top singular pair of the rearranged sum, which lies in the span of the a_i and of the g_i."""
    xa = torch.stack([w * t.flatten().double() for w, t in zip(weights, a, strict=True)], 1)
    yg = torch.stack([t.flatten().double() for t in g], 1)
    ex, vx = torch.linalg.eigh(xa.T @ xa)
    ey, vy = torch.linalg.eigh(yg.T @ yg)
    keep_x, keep_y = ex > ex.max() * 1e-12, ey > ey.max() * 1e-12  # proportional terms: a rank-1 Gram
    rx = vx[:, keep_x] * ex[keep_x].sqrt()  # xa = Qx rx^T with Qx orthonormal
    ry = vy[:, keep_y] * ey[keep_y].sqrt()
    u, s, vh = torch.linalg.svd(rx.T @ ry)
    alpha = vx[:, keep_x] @ (u[:, 0] / ex[keep_x].sqrt())  # coefficients of the a_i (times their weights)
    beta = vy[:, keep_y] @ (vh[0] / ey[keep_y].sqrt())
    if alpha.sum() < 0:  # the singular pair's sign is arbitrary; the Fisher factors are positive
        alpha, beta = -alpha, -beta
    root = s[0].sqrt()
    a_new = (xa @ alpha * root).reshape(a[0].shape)
    g_new = (yg @ beta * root).reshape(g[0].shape)
    return a_new.float(), g_new.float()


def _truncate(m: Tensor, energy: float, rank: int | None = None) -> tuple[Tensor, Tensor, float]:
    """(eigenvalues less the tail's mean, eigenvectors, the tail's mean eigenvalue) of a symmetric PSD
    matrix: the fewest top eigenvectors holding `energy` of its trace (at most `rank`), the rest as one level."""
    values, vectors = torch.linalg.eigh(m.double())
    values = values.clamp(min=0).flip(0)
    vectors = vectors.flip(1)
    total = float(values.sum())
    k = int((values.cumsum(0) < energy * total).sum()) + 1 if total > 0 else 1
    k = min(k, len(values), rank or len(values))
    tail = float(values[k:].mean()) if k < len(values) else 0.0
    return (values[:k] - tail).float(), vectors[:, :k].float().contiguous(), tail


class KroneckerPenalty:
    """Kronecker-factored layers plus a diagonal quadratic for every other parameter.

    >>> import torch
    >>> from lifelong.importance.kronecker import LayerFactors
    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad(): _ = net.weight.zero_()  # an exact anchor, so the value below is exact
    >>> q = KroneckerPenalty(strength=2.0)
    >>> q.add({"": LayerFactors("linear", torch.eye(2), torch.ones(1, 1), False)}, {}, net)
    >>> with torch.no_grad(): _ = net.weight.add_(torch.tensor([[1.0, 2.0]]))
    >>> float(q.value(net).detach())  # 2/2 * (1^2 + 2^2)
    5.0
    """

    def __init__(self, strength: float, merge: str = "nearest", energy: float = 1.0, rank: int | None = None):
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, not {merge!r}")
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], not {energy}")
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be >= 1 or None, not {rank}")
        self.strength, self.merge, self.energy, self.rank = float(strength), merge, energy, rank
        self.layers: dict[str, dict[str, Any]] = {}
        self.diagonal = QuadraticPenalty(strength)
        self.tasks = 0
        self._steps: dict[str, _Step] = {}  # per layer, what the step multiplies by (derived from the state)
        self._bound: tuple[int, dict[str, nn.Module]] | None = None

    @property
    def empty(self) -> bool:
        return not self.layers and self.diagonal.empty

    # -- adding a task -----------------------------------------------------------------------------
    def add(self, factors: dict[str, LayerFactors], diagonal: dict[str, Tensor], model: nn.Module,
            decay: float = 1.0, centred: bool = True) -> None:
        """Add the task whose Fisher is `factors` (+ `diagonal`) at the model's current parameters.
        `centred`: keep every task's own anchor (EWC's sum); False: recentre on the latest parameters
        only (the online Laplace of Ritter et al. 2018; with `decay`, online EWC's rule)."""
        modules = dict(model.named_modules())
        for name, f in factors.items():
            module = modules[name]
            w = layer_matrix(*weight_and_bias(module, f.bias)).detach().float()
            if name not in self.layers:
                self.layers[name] = {"A": f.A.float().clone(), "G": f.G.float().clone(), "scale": 1.0,
                                     "anchor": w.clone(), "force": torch.zeros_like(w), "residual": 0.0,
                                     "kind": f.kind, "bias": f.bias}
                continue
            layer = self.layers[name]
            self._grow(name, w.shape[0])
            g_t = _pad(f.G.float(), layer["G"].shape[0])
            d = w - layer["anchor"]
            if centred:
                pulled = layer["scale"] * layer["G"] @ d @ layer["A"]
                layer["residual"] = decay * (layer["residual"] + 2 * float((layer["force"] * d).sum())
                                             + float((d * pulled).sum()))
                layer["force"] = decay * (pulled + layer["force"])
            else:
                layer["residual"], layer["force"] = 0.0, torch.zeros_like(w)
            if self.merge == "nearest":
                layer["A"], layer["G"] = nearest_kronecker([layer["A"], f.A.float()], [layer["G"], g_t],
                                                           [decay * layer["scale"], 1.0])
                layer["scale"] = 1.0
            else:  # summed factors, the precision (sum A)(x)(sum G) / (sum of the task weights)
                total = decay / layer["scale"] + 1.0
                layer["A"] = decay * layer["A"] + f.A.float()
                layer["G"] = decay * layer["G"] + g_t
                layer["scale"] = 1.0 / total
            layer["anchor"] = w.clone()
        if diagonal:
            anchor = {n: p.detach() for n, p in model.named_parameters() if n in diagonal}
            if centred:
                self.diagonal.add(diagonal, anchor, decay=decay)
            else:
                self.diagonal.accumulate(diagonal, anchor, decay=decay)
        self.tasks += 1
        self._steps = {}

    def _grow(self, name: str, out: int) -> None:
        """An output layer that gained classes: its new rows start unprotected."""
        layer = self.layers[name]
        old = layer["anchor"].shape[0]
        if out == old:
            return
        if out < old:
            raise ValueError(f"layer {name!r} has {out} outputs; the penalty was built for {old}")
        extra = out - old
        layer["G"] = _pad(layer["G"], out)
        layer["anchor"] = torch.cat([layer["anchor"], layer["anchor"].new_zeros(extra, layer["anchor"].shape[1])])
        layer["force"] = torch.cat([layer["force"], layer["force"].new_zeros(extra, layer["force"].shape[1])])
        self._steps.pop(name, None)

    # -- using it ----------------------------------------------------------------------------------
    def _params(self, model: nn.Module) -> dict[str, tuple[Tensor, Tensor | None]]:
        if self._bound is None or self._bound[0] != id(model):
            modules = dict(model.named_modules())
            missing = [n for n in self.layers if n not in modules]
            if missing:
                raise ValueError(f"the model has no module(s) {missing[:5]} that this penalty protects")
            self._bound = (id(model), {n: modules[n] for n in self.layers})
        out = {}
        for name, module in self._bound[1].items():  # the modules' current parameters (a grown head has new ones)
            weight, bias = weight_and_bias(module, self.layers[name]["bias"])
            if weight.shape[0] != self.layers[name]["anchor"].shape[0]:
                self._grow(name, weight.shape[0])
            out[name] = (weight, bias)
        return out

    def _step(self, name: str) -> _Step:
        """What the gradient multiplies by: the factors, or, when `energy` < 1 or `rank` makes it cheaper,
        each factor's top eigenvectors plus an isotropic tail."""
        if name not in self._steps:
            layer = self.layers[name]
            a, g = layer["A"] * layer["scale"], layer["G"]
            out, inp = layer["anchor"].shape
            truncated = None
            if self.energy < 1 or self.rank is not None:
                la, ua, sigma = _truncate(a, self.energy, self.rank)
                lg, ug, tau = _truncate(g, self.energy, self.rank)
                if 2 * (ua.shape[1] + ug.shape[1]) < out + inp:  # fewer multiplications than the dense step
                    truncated = (ua, la, sigma, ug, lg, tau)
            if truncated is None:
                self._steps[name] = _Step(g=g, a=a, const=_pull_constant(layer, g, a))
            else:
                ua, la, sigma, ug, lg, tau = truncated
                step = _Step(g=ug, a=ua, const=layer["force"], lg=lg, la=la, tau=tau, sigma=sigma)
                const = _pull_constant(layer, *step.dense())
                cols = inp - 1 if layer["bias"] else inp
                step.const = const[:, :cols].contiguous()  # the bias column apart, so the weight's part is contiguous
                step.const_b = const[:, cols].clone() if layer["bias"] else None
                step.u_w_t = ua[:cols].T.contiguous()
                step.g_t, step.scale_t, step.tau_la = ug.T.contiguous(), torch.outer(lg, la), tau * la
                step.g_side = (sigma * ug * lg).contiguous()
                self._steps[name] = step
        return self._steps[name]

    @torch.no_grad()
    def add_gradient_(self, model: nn.Module) -> None:
        """grad += strength * (G W~ A + const) per layer (and the diagonal's gradient), no autograd graph.
        Truncated, it reads W twice (W U and V^T W) and adds four low-rank or isotropic terms."""
        if self.empty or self.strength == 0:
            return
        lam = self.strength
        for name, (weight, bias) in self._params(model).items():
            step = self._step(name)
            cols = weight[0].numel()
            w2 = weight.reshape(weight.shape[0], cols)
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            if bias is not None and bias.grad is None:
                bias.grad = torch.zeros_like(bias)
            bias_grad = bias.grad if bias is not None else None
            g2 = weight.grad.view(weight.shape[0], cols)
            if step.la is None:  # dense: G (W~ A) + const, W~ A from W's and b's parts
                wa = w2 @ step.a[:cols]
                if bias is not None:
                    wa.addr_(bias, step.a[cols])
                update = torch.addmm(step.const, step.g, wa)
                g2.add_(update[:, :cols], alpha=lam)
                if bias is not None and bias_grad is not None:
                    bias_grad.add_(update[:, cols], alpha=lam)
                continue
            assert step.u_w_t is not None and step.g_t is not None
            assert step.scale_t is not None and step.tau_la is not None and step.g_side is not None
            # G W~ A = V lg (V^T W~ U) la U^T + tau W~ U la U^T + sigma V lg V^T W~ + tau sigma W~: the first two
            # as one product with U^T, the third with V^T W~; each skinny product reads W (or writes the
            # gradient) once, in the orientation that keeps both operands contiguous
            wu = w2 @ step.a[:cols]  # W~ U  [out, kA] (U is contiguous, so its first rows are too)
            if bias is not None:
                wu.addr_(bias, step.a[cols])
            vw = step.g_t @ w2  # V^T W  [kG, cols]
            core = (step.g_t @ wu).mul_(step.scale_t)  # lg (V^T W~ U) la  [kG, kA]
            left = torch.addmm(wu.mul_(step.tau_la), step.g, core)  # (V lg V^T + tau) W~ U la  [out, kA]
            g2.addmm_(left, step.u_w_t, alpha=lam)
            g2.addmm_(step.g_side, vw, alpha=lam)
            g2.add_(w2, alpha=lam * step.tau * step.sigma).add_(step.const, alpha=lam)
            if bias is not None and bias_grad is not None:
                assert step.const_b is not None
                update = torch.addmv(step.const_b, left, step.a[cols])
                update.addmv_(step.g_side, step.g_t @ bias).add_(bias, alpha=step.tau * step.sigma)
                bias_grad.add_(update, alpha=lam)
        self.diagonal.add_gradient_(model)

    def value(self, model: nn.Module) -> Tensor:
        """The penalty, differentiable in the model's parameters (with the factors as the step applies them,
        so that its gradient is the step)."""
        total = torch.zeros((), device=model_device(model))
        for name, (weight, bias) in self._params(model).items():
            layer = self.layers[name]
            g, a = self._step(name).dense()
            d = layer_matrix(weight, bias) - layer["anchor"]
            total = total + (d * (g @ d @ a)).sum() + 2 * (layer["force"] * d).sum() + layer["residual"]
        return 0.5 * self.strength * total + self.diagonal.value(model)

    # -- reporting and state -----------------------------------------------------------------------
    def protection(self) -> list[dict[str, Any]]:
        """Per layer: its form, sizes, the step's ranks and the share of the curvature's trace it keeps,
        and its state bytes (a diagonal penalty would take 8 bytes per parameter)."""
        rows = []
        for name, layer in self.layers.items():
            step = self._step(name)
            out, inp = layer["anchor"].shape
            trace = float(layer["A"].trace()) * float(layer["G"].trace()) * layer["scale"]
            if step.la is None or step.lg is None or trace <= 0:
                kept = 1.0
            else:  # the share of the Kronecker trace in exact eigen-directions (the rest: the isotropic tails)
                kept = float((step.lg + step.tau).sum()) * float((step.la + step.sigma).sum()) / trace
            rows.append({"layer": name, "form": f"kronecker ({layer['kind']})", "parameters": out * inp,
                         "rank_A": step.a.shape[1], "size_A": inp, "rank_G": step.g.shape[1], "size_G": out,
                         "curvature_kept": kept,
                         "state_bytes": sum(layer[k].nbytes for k in ("A", "G", "anchor", "force")),
                         "diagonal_state_bytes": 8 * out * inp})
        for name, shape in zip(self.diagonal.names, self.diagonal.shapes, strict=True):
            rows.append({"layer": name, "form": "diagonal", "parameters": shape.numel(), "curvature_kept": 1.0,
                         "state_bytes": 8 * shape.numel(), "diagonal_state_bytes": 8 * shape.numel()})
        return rows

    def nbytes(self) -> int:
        return sum(r["state_bytes"] for r in self.protection())

    def state_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "merge": self.merge, "energy": self.energy, "rank": self.rank,
                "tasks": self.tasks,
                "layers": {n: dict(layer) for n, layer in self.layers.items()}, "diagonal": self.diagonal.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strength, self.merge, self.energy = float(state["strength"]), state["merge"], float(state["energy"])
        self.rank = state.get("rank")  # states saved before the cap existed: none
        self.tasks = int(state["tasks"])
        self.layers = {n: {k: v.clone() if isinstance(v, Tensor) else v for k, v in layer.items()}
                       for n, layer in state["layers"].items()}
        self.diagonal.load_state_dict(state["diagonal"])
        self._steps, self._bound = {}, None


def _pull_constant(layer: dict[str, Any], g: Tensor, a: Tensor) -> Tensor:
    """c - G W* A: the part of the penalty's gradient that does not depend on W (in double precision,
    since the step adds it to G W A, which is about as large)."""
    pulled = g.double() @ layer["anchor"].double() @ a.double()
    return (layer["force"].double() - pulled).float()


def _pad(m: Tensor, size: int) -> Tensor:
    """A square matrix grown to `size` with zeros (outputs that did not exist when it was estimated)."""
    if m.shape[0] == size:
        return m
    out = m.new_zeros(size, size)
    out[: m.shape[0], : m.shape[1]] = m
    return out
