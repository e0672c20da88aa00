"""Where training runs: `--device auto|cpu|cuda|cuda:N|mps` and the helpers that move tensors there.

The rule the library follows: the `Learner` moves the model to the device once and every batch it
makes (training, importance, evaluation) with `.to(device, non_blocking=True)`; a strategy creates
its state (anchors, precisions, SI's running sums, bases, logits) on the device of the parameters it
protects (`p.device`); replay memories store on the model's device (or on the CPU, by their
`memory_device` option) and return batches on the model's device; checkpoints hold CPU tensors and
are loaded onto the chosen device. Random generators stay on the CPU (their states are the
"generator" entries of a state dict), so a seed draws the same samples on every device.

"auto" is CUDA when there is one, else the CPU (MPS only when asked: several strategies compute in
float64, which MPS lacks). Under torchrun, "cuda" and "auto" take the rank's own GPU (LOCAL_RANK).

>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_device("gpu")
Traceback (most recent call last):
...
lifelong.devices.DeviceError: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

AUTOCASTS = ("none", "bf16")
_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class DeviceError(ValueError):
    """A device that is malformed or not present on this machine."""


def check_name(name: str) -> str:
    """The device name, if it is one of auto, cpu, cuda, cuda:N, mps (whether present or not)."""
    if not isinstance(name, str) or not _PATTERN.fullmatch(name):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device `name` stands for on this machine; a clear `DeviceError` when it is absent."""
    check_name(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("--device mps: no MPS (Apple GPU) device here; use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA device here (torch {torch.__version__}, built for CUDA "
                          f"{torch.version.cuda or 'none'}); use --device cpu or auto")
    index = int(name[5:]) if name.startswith("cuda:") else int(os.environ.get("LOCAL_RANK", 0))
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def to_device(obj: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """`obj` with every tensor in it (nested dicts, lists, tuples, named tuples such as `Batch`) on
    `device`; a dict's "generator" entry (a CPU generator's state) stays where it is."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: v if k == "generator" else to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def tensors_of(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a (nested) state, generator states left out: what `to_device` moves."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "generator":
                yield from tensors_of(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_of(v)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def follow(strategy: Any, device: torch.device) -> None:
    """Move a strategy's state (e.g. loaded from a checkpoint onto another device) to `device`, through
    its own state_dict / load_state_dict; nothing happens when it is already there."""
    state = strategy.state_dict()
    if any(t.device != device for t in tensors_of(state)):
        strategy.load_state_dict(to_device(state, device))
