"""What consolidation protects, as data a report can show: histograms of each parameter tensor's
importance, and the bytes the consolidation state takes."""

from __future__ import annotations

from typing import Any

import numpy as np

from lifelong.strategies.base import Strategy

HISTOGRAM_EDGES = [float(e) for e in np.linspace(-12, 4, 33)]  # log10 of importance


def _quadratics(strategy: Strategy) -> list[tuple[str, Any]]:
    """(part name, quadratic penalty) of every consolidation part of a (composed) strategy."""
    parts = getattr(strategy, "parts", [strategy])
    return [(p.name, p.quadratic) for p in parts if getattr(p, "quadratic", None) is not None]


def importance_histograms(strategy: Strategy) -> dict[str, dict[str, Any]]:
    """Per parameter tensor, a histogram of log10(importance) of every consolidation part (EWC's
    Fisher, SI's and MAS's Omega, accumulated), with the count of exact zeros."""
    out: dict[str, dict[str, Any]] = {}
    for name, quadratic in _quadratics(strategy):
        if quadratic.empty:
            continue
        for tensor, precision in zip(quadratic.names, quadratic.precision, strict=True):
            values = precision.flatten()
            positive = values[values > 0]
            counts, _ = np.histogram(np.log10(positive.cpu().numpy()), bins=HISTOGRAM_EDGES)
            out[f"{name}:{tensor}"] = {"edges": HISTOGRAM_EDGES, "counts": counts.tolist(),
                                       "zeros": int((values == 0).sum()), "size": int(values.numel())}
    return out


def consolidation_bytes(strategy: Strategy) -> int:
    """Bytes of the consolidation state of every consolidation part: a diagonal penalty's precision and
    centre, a Kronecker penalty's factors, anchors and diagonal fallback, GPM's and orthogonal LoRA's bases."""
    total = sum(q.nbytes() for _, q in _quadratics(strategy))
    for part in getattr(strategy, "parts", [strategy]):
        kronecker = getattr(part, "kronecker", None)
        if kronecker is not None:
            total += kronecker.nbytes()
        bases = getattr(part, "bases", None)
        if isinstance(bases, dict):
            total += sum(b.nbytes for b in bases.values())
    return total
