"""Training on PyTorch's own distributed engine (torchrun + DistributedDataParallel).

`lifelong run ... --distributed` under `torchrun --nproc_per_node N -m lifelong run ...`:
- every rank builds the same stream and model (same seed) and wraps the model in DDP;
- each epoch's shuffled order is the same on every rank; rank r trains on every N-th sample of it,
  with batch_size / N samples per step, so the global batch is the single-process one;
- DDP averages the gradients during backward; consolidation then adds its closed-form penalty
  gradient (the same on every rank, since parameters and state are), so ranks stay identical;
- importance is estimated on each rank's shard and all-reduced (sums and counts) so that it equals
  the single-process importance over the same samples;
- consolidation state is kept once per rank (it is small: two floats per parameter); results are
  written and printed by rank 0 only.
Backends: gloo on CPU, nccl with `--device cuda` (or auto on a CUDA machine): one GPU per rank, the
rank's LOCAL_RANK.

With `--fsdp` the parameters are sharded instead (FSDP2's `fully_shard`, one unit per layer that
owns parameters): each rank holds 1/N of every parameter, and the consolidation state (precision
and centre) is cut exactly like the parameter it belongs to, so a rank keeps two floats per local
parameter. Importance is computed from the full-size per-sample statistics of the rank's shard of
data, all-reduced, then cut to the rank's shard.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: str = "cpu") -> None:
    """Join the process group torchrun describes in the environment (no-op without torchrun): nccl
    when training on CUDA (`device` "cuda", "cuda:N" or "auto" on a CUDA machine), else gloo."""
    if dist.is_initialized() or "RANK" not in os.environ:
        return
    from lifelong.devices import resolve_device

    where = resolve_device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    dist.init_process_group("nccl" if where.type == "cuda" else "gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum tensors over ranks, in place (nothing to do in one process)."""
    if not active():
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def shard_model(model: torch.nn.Module) -> None:
    """Shard every parameter-owning layer, then the whole model, with FSDP2 (in place)."""
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules())[1:]:
        if any(True for _ in module.parameters(recurse=False)):
            fully_shard(module)
    fully_shard(model)


def local_numel(model: torch.nn.Module) -> int:
    """Parameters held by this rank (all of them unless sharded)."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
