"""Kronecker-factored Fisher blocks (K-FAC) per layer, and the exact diagonal for the rest, in one pass.

For a Linear layer y = W a + b, the per-sample gradient of [W b] is g a~^T (a~ = [a, 1]), so its Fisher
block E[vec(g a~^T) vec(g a~^T)^T] is approximated by A (x) G with A = E[a~ a~^T] and G = E[g g^T]
(Martens & Grosse 2015, "Optimizing neural networks with Kronecker-factored approximate curvature").
Here g is the per-sample gradient of the log-likelihood at the layer's output, taken from one batched
backward pass of a summed loss (per sample exact, as in rules.py).

- Linear on sequences [N, L, in] and Conv2d (through unfolded patches, positions = output pixels): the
  "expand" form (Grosse & Martens 2016, "A Kronecker-factored approximate Fisher matrix for convolution
  layers"; Eschenhagen et al. 2023): A averages a~ a~^T over a sample's positions, G sums g g^T over them.
- Which Fisher: ``true`` (the default: one label per sample drawn from the model, an unbiased estimate
  of the model's Fisher), ``empirical`` (the data's labels) or ``exact`` (the expectation over the
  classes: G = E[sum_c p_c g_c g_c^T], one backward pass per class).
- Any other module with trainable parameters (Embedding, LayerNorm, ...) gets the exact diagonal Fisher
  through its rule in rules.py, from the same backward pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.devices import model_device
from lifelong.distributed import all_reduce_sum_
from lifelong.importance import rules
from lifelong.importance.capture import forward_with_calls
from lifelong.importance.estimate import _call, _limited, _objective, _owners, _sampled_labels

KRONECKER_FISHERS = ("true", "empirical", "exact")


@dataclass
class LayerFactors:
    """One layer's Fisher block A (x) G. `A` is over the layer's inputs with a last column of ones when
    `bias` (so it covers [W b]); `G` over its outputs. `kind`: "linear" or "conv2d"."""

    kind: str
    A: Tensor
    G: Tensor
    bias: bool

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in~): the shape of the layer's parameters as one matrix [W b]."""
        return self.G.shape[0], self.A.shape[0]


def factorable(module: nn.Module) -> str | None:
    """"linear" or "conv2d" when the module's trainable weight gets Kronecker factors, else None."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or not weight.requires_grad:
        return None
    kind = rules.module_type(module)
    if kind is nn.Linear:
        return "linear"
    if kind is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        return "conv2d"
    return None


def layer_matrix(weight: Tensor, bias: Tensor | None) -> Tensor:
    """A layer's weight (and bias) as one matrix [out, in~], in the order of its unfolded inputs."""
    w = weight.reshape(weight.shape[0], -1)
    return torch.cat([w, bias.reshape(-1, 1)], 1) if bias is not None else w


def weight_and_bias(module: nn.Module, bias: bool) -> tuple[Tensor, Tensor | None]:
    """A factored layer's weight, and its bias when the factors cover one."""
    return cast(Tensor, module.weight), cast(Tensor, module.bias) if bias else None


def layer_inputs(module: nn.Module, kind: str, x: Tensor, bias: bool) -> Tensor:
    """The layer's inputs as [N, L, in~] (positions L: sequence positions or output pixels), with a
    last column of ones when the layer has a trainable bias."""
    x = x.detach()
    if kind == "conv2d":
        conv: Any = module
        cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # [N, C*k*k, L]
        a = cols.transpose(1, 2)
    else:
        a = x.reshape(x.shape[0], -1, x.shape[-1])
    if bias:
        a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], 2)
    return a


def layer_output_grads(kind: str, g: Tensor) -> Tensor:
    """Output gradients as [N * L, out]."""
    if kind == "conv2d":
        return g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


def kronecker_factors(model: nn.Module, batches: Iterable[Any], *, fisher: str = "true",
                      max_samples: int | None = None, generator: torch.Generator | None = None
                      ) -> tuple[dict[str, LayerFactors], dict[str, Tensor]]:
    """Kronecker factors of every Linear and Conv2d module with a trainable weight (by module name),
    and the exact diagonal Fisher of every other trainable parameter (by parameter name).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> factors, diagonal = kronecker_factors(net, [(torch.randn(16, 3), torch.randint(0, 2, (16,)))])
    >>> {n: (f.A.shape[0], f.G.shape[0]) for n, f in factors.items()}, diagonal
    ({'0': (4, 4), '2': (5, 2)}, {})
    """
    if fisher not in KRONECKER_FISHERS:
        raise ValueError(f"unknown fisher {fisher!r} for Kronecker factors; choose one of {KRONECKER_FISHERS}")
    if any(hasattr(p, "to_local") for p in model.parameters()):
        raise ValueError("Kronecker factors need whole parameters; FSDP-sharded models are not supported")
    owners = _owners(model)
    kinds = {n: factorable(m) for n, m in owners}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    covered = {(f"{m}." if m else "") + local for m, k in kinds.items() if k is not None
               for local in ("weight", "bias")}
    a_sums: dict[str, Tensor] = {}
    g_sums: dict[str, Tensor] = {}
    diagonal = {n: torch.zeros(tuple(p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()
                if n not in covered}
    objective = _objective("exact" if fisher == "exact" else "fisher")
    was_training = model.training
    model.eval()  # no dropout noise in the estimate
    count = 0
    try:
        for b in _limited(batches, max_samples):
            if fisher == "true":
                b = Batch(b.x, _sampled_labels(model, b, generator), b.task)
            _accumulate(model, owners, kinds, b, objective, a_sums, g_sums, diagonal)
            count += len(b.y)
    finally:
        model.train(was_training)
    names = sorted(a_sums)
    a_sums = {n: symmetric_from_upper(a_sums[n]) for n in names}
    g_sums = {n: symmetric_from_upper(g_sums[n]) for n in names}
    total = torch.tensor(float(count), device=model_device(model))  # nccl reduces CUDA tensors only
    all_reduce_sum_([*(a_sums[n] for n in names), *(g_sums[n] for n in names), *diagonal.values(), total])
    if total == 0:
        raise ValueError("Kronecker factors need at least one sample; the data was empty")
    modules = dict(owners)
    factors = {n: LayerFactors(kinds[n], a_sums[n] / total, g_sums[n] / total,  # type: ignore[arg-type]
                               has_bias(modules[n])) for n in names}
    return factors, {n: v / total for n, v in diagonal.items()}


def add_gram_(total: Tensor | None, x: Tensor, *, scale: float = 1.0, blocks: int = 4) -> Tensor:
    """Add scale * x^T x ([rows, d] -> [d, d]) to `total`, computing only the blocks on and above the
    diagonal (a Gram matrix is symmetric, so this is about 60 % of the multiply at 4 blocks); the blocks
    below the diagonal stay as they were until `symmetric_from_upper`. Returns `total` (new when None)."""
    d = x.shape[-1]
    if total is None:
        total = x.new_zeros(d, d)
    step = -(-d // blocks)
    for i in range(0, d, step):
        total[i:i + step, i:].addmm_(x[:, i:i + step].T, x[:, i:], alpha=scale)
    return total


def symmetric_from_upper(upper: Tensor) -> Tensor:
    """The symmetric matrix whose upper triangle (with the diagonal) is `upper`'s."""
    return torch.triu(upper) + torch.triu(upper, 1).T


def has_bias(module: nn.Module) -> bool:
    """Whether the layer's bias trains (then its factors and bases cover it as a last input column)."""
    bias = getattr(module, "bias", None)
    return isinstance(bias, nn.Parameter) and bias.requires_grad


def _accumulate(model: nn.Module, owners: list[tuple[str, nn.Module]], kinds: dict[str, str | None], b: Batch,
                objective, a_sums: dict[str, Tensor], g_sums: dict[str, Tensor], diagonal: dict[str, Tensor]) -> None:
    losses, calls, problem = forward_with_calls(owners, lambda: objective(_call(model, b.x, b.task), b.y),
                                                len(b.y))
    if problem is not None:
        raise ValueError(f"{problem}: its per-sample gradients are not separable, so Kronecker factors are "
                         "not defined for this model")
    modules = dict(owners)
    names = [n for n, _ in owners if n in calls]
    for name in names:
        kind = kinds[name]
        if kind is not None:  # A depends on the inputs only: once per batch, whatever the labels
            a = layer_inputs(modules[name], kind, calls[name].args[0], has_bias(modules[name]))
            a_sums[name] = add_gram_(a_sums.get(name), a.reshape(-1, a.shape[-1]), scale=1 / a.shape[1])
    for k, loss in enumerate(losses):  # one backward per objective (the exact Fisher: per class)
        grads = torch.autograd.grad(loss, [calls[n].output for n in names], allow_unused=True,
                                    retain_graph=k < len(losses) - 1)
        for name, g in zip(names, grads, strict=True):
            kind = kinds[name]
            if kind is not None:
                out = weight_and_bias(modules[name], False)[0].shape[0]
                if g is None:
                    g_sums.setdefault(name, a_sums[name].new_zeros(out, out))
                    continue
                g_sums[name] = add_gram_(g_sums.get(name), layer_output_grads(kind, g.detach()))
                continue
            if g is None:
                continue
            call = calls[name]
            prefix = f"{name}." if name else ""
            module = modules[name]
            for local, value in rules.rule_for(module)(module, call.args, call.kwargs, g.detach(),
                                                       torch.square).items():
                diagonal[prefix + local] += value
