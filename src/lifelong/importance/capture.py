"""One batched forward pass with each parameter-owning module's call recorded, for per-sample gradients.

The diagonal importance (estimate.py) and the Kronecker factors (kronecker.py) both take each module's
inputs from a forward hook and the gradient at its output from one backward pass of a summed loss. That
gradient is per sample exact only when every module ran once, returned one tensor with the batch as its
first dimension, and nothing changed that tensor in place after the hook saw it (a ReLU(inplace=True)
after a Linear layer would hand autograd another tensor's history). `forward_with_calls` checks all four.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass
class ModuleCall:
    """What one module was called with and returned in the forward pass."""

    args: tuple
    kwargs: dict[str, Any]
    output: Tensor


def forward_with_calls(owners: list[tuple[str, nn.Module]], forward: Callable[[], Any],
                       batch_size: int) -> tuple[Any, dict[str, ModuleCall], str | None]:
    """Run `forward()` with a hook on each (name, module) of `owners`; returns what it returned, each module's
    call that ran, and None, or a reason why the per-sample gradients at the modules' outputs are not
    separable (then the calls are incomplete and must not be used)."""
    seen: dict[str, list[tuple[tuple, dict, Any, int]]] = {}

    def capture(name: str):
        def hook(module, args, kwargs, output):
            version = output._version if isinstance(output, Tensor) else -1
            seen.setdefault(name, []).append((args, kwargs, output, version))
        return hook

    handles = [m.register_forward_hook(capture(n), with_kwargs=True) for n, m in owners]
    try:
        result = forward()
    finally:
        for h in handles:
            h.remove()
    calls: dict[str, ModuleCall] = {}
    for name, runs in seen.items():
        label = name or "(model)"
        if len(runs) != 1:
            return result, calls, f"module {label!r} runs {len(runs)} times in one forward pass"
        args, kwargs, output, version = runs[0]
        if not isinstance(output, Tensor):
            return result, calls, f"module {label!r} returns {type(output).__name__}, not one tensor"
        if output._version != version:
            return result, calls, f"module {label!r}'s output is changed in place after it returns"
        if output.dim() == 0 or output.shape[0] != batch_size:
            # e.g. position embeddings of shape [1, L] broadcast over the batch: their output's gradient is
            # summed over samples, so its per-sample squares are not separable
            return result, calls, f"module {label!r} runs once for the whole batch and is broadcast"
        calls[name] = ModuleCall(args, kwargs, output)
    return result, calls, None
