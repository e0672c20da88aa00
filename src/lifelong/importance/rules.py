"""Exact per-sample gradient statistics, one module at a time, from one batched backward pass.

For an objective that is a sum of per-sample terms, the gradient with respect to a module's output
at sample n is that sample's own output gradient g_n. With the module's input a_n, each rule forms
sum_n transform(per-sample parameter gradient), transform being the square (Fisher) or the absolute
value (MAS), without a backward pass per sample:

- Linear on [N, in]: the per-sample weight gradient is g_n a_n^T, so the sum of its squares is
  (g^2)^T (a^2) and the sum of its absolute values |g|^T |a|: one matrix product.
- Linear on sequences [N, L, in]: sum over positions, einsum('nlo,nli->noi') per chunk of samples.
- Conv2d: the same on the unfolded input (im2col), positions being the output pixels.
- Embedding: the rows of the tokens a sample uses, summed per (sample, token), then squared.
- LayerNorm: the normalised input recomputed from the input, times g, summed over positions.
- any other module: ``torch.func.vmap`` of the module's own vector-Jacobian product, per sample.

BackPACK (Dangel et al. 2020) computes such quantities the same way; this is a small rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

Transform = Callable[[Tensor], Tensor]
CHUNK_ELEMENTS = 1 << 24  # per-sample gradients materialised at once (64 MB in float32)


def _chunks(n: int, per_sample: int):
    step = max(1, CHUNK_ELEMENTS // max(per_sample, 1))
    for start in range(0, n, step):
        yield slice(start, start + step)


def _own(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}


def linear(module: nn.Linear, args: tuple, kwargs: dict, g: Tensor, transform: Transform) -> dict[str, Tensor]:
    a, own, out = args[0].detach(), _own(module), {}
    if a.dim() == 2:
        if "weight" in own:
            out["weight"] = transform(g).T @ transform(a)
        if "bias" in own:
            out["bias"] = transform(g).sum(0)
        return out
    n = a.shape[0]
    a3, g3 = a.reshape(n, -1, a.shape[-1]), g.reshape(n, -1, g.shape[-1])
    if "weight" in own:
        total = torch.zeros(tuple(module.weight.shape), dtype=g.dtype, device=g.device)
        for sl in _chunks(n, module.weight.numel()):
            total += transform(torch.einsum("nlo,nli->noi", g3[sl], a3[sl])).sum(0)
        out["weight"] = total
    if "bias" in own:
        out["bias"] = transform(g3.sum(1)).sum(0)
    return out


def conv2d(module: nn.Conv2d, args: tuple, kwargs: dict, g: Tensor, transform: Transform) -> dict[str, Tensor]:
    a, own, out = args[0].detach(), _own(module), {}
    n = a.shape[0]
    if "weight" in own:
        padding = module.padding if isinstance(module.padding, tuple) else (0, 0)  # str padding never gets here
        cols = F.unfold(a, module.kernel_size, module.dilation, padding, module.stride)  # [N, C*k*k, L]
        g3 = g.reshape(n, g.shape[1], -1)
        total = torch.zeros(module.weight.shape[0], cols.shape[1], dtype=g.dtype, device=g.device)
        for sl in _chunks(n, module.weight.numel()):
            total += transform(torch.einsum("nol,nkl->nok", g3[sl], cols[sl])).sum(0)
        out["weight"] = total.reshape(module.weight.shape)
    if "bias" in own:
        out["bias"] = transform(g.sum((2, 3))).sum(0)
    return out


def embedding(module: nn.Embedding, args: tuple, kwargs: dict, g: Tensor, transform: Transform) -> dict[str, Tensor]:
    if "weight" not in _own(module):
        return {}
    idx = args[0]
    n, vocab = idx.shape[0], module.num_embeddings
    idx, g = idx.reshape(n, -1), g.reshape(n, -1, g.shape[-1])
    keys = torch.arange(n, device=idx.device).unsqueeze(1) * vocab + idx
    keep = torch.ones_like(idx, dtype=torch.bool) if module.padding_idx is None else idx != module.padding_idx
    unique, inverse = torch.unique(keys[keep], return_inverse=True)
    per_sample_rows = g.new_zeros(len(unique), g.shape[-1]).index_add_(0, inverse, g[keep])
    out = g.new_zeros(tuple(module.weight.shape)).index_add_(0, unique % vocab,
                                                                            transform(per_sample_rows))
    return {"weight": out}


def layer_norm(module: nn.LayerNorm, args: tuple, kwargs: dict, g: Tensor, transform: Transform) -> dict[str, Tensor]:
    a, own, out = args[0].detach(), _own(module), {}
    n, shape = a.shape[0], module.normalized_shape
    g3 = g.reshape(n, -1, *shape)
    if "weight" in own:
        normalised = F.layer_norm(a, shape, None, None, module.eps).reshape(n, -1, *shape)
        out["weight"] = transform((g3 * normalised).sum(1)).sum(0)
    if "bias" in own:
        out["bias"] = transform(g3.sum(1)).sum(0)
    return out


def generic(module: nn.Module, args: tuple, kwargs: dict, g: Tensor, transform: Transform) -> dict[str, Tensor]:
    """Any module whose output for a sample depends on that sample's input alone: vmap of its VJP."""
    params = {k: p.detach() for k, p in _own(module).items()}
    batched = [isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == g.shape[0] for a in args]

    def per_sample(p: dict[str, Tensor], sample_args: list[Any], g_n: Tensor) -> dict[str, Tensor]:
        full = [s.unsqueeze(0) if b else s for s, b in zip(sample_args, batched, strict=True)]
        pullback = vjp(lambda q: functional_call(module, q, tuple(full), kwargs), p)[1]
        return pullback(g_n.unsqueeze(0))[0]

    in_dims = ([0 if b else None for b in batched],)
    grads = vmap(per_sample, in_dims=(None, *in_dims, 0))(params, list(args), g)
    return {k: transform(v).sum(0) for k, v in grads.items()}


def module_type(module: nn.Module) -> type:
    """The module's own class; FSDP2 swaps a sharded module's class for a subclass `FSDP<class>`."""
    cls = type(module)
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return cls
    if isinstance(module, FSDPModule):
        cls = next(base for base in cls.__bases__ if base is not FSDPModule)
    return cls


def rule_for(module: nn.Module) -> Callable[..., dict[str, Tensor]]:
    """The exact rule for a module type; `generic` where no closed form is written."""
    kind = module_type(module)
    if kind is nn.Linear:
        return linear
    if kind is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        return conv2d
    if kind is nn.Embedding and module.max_norm is None and not module.scale_grad_by_freq:
        return embedding
    if kind is nn.LayerNorm:
        return layer_norm
    return generic
