"""Continual-learning metrics as pure functions of the accuracy matrix.

R[i][j] is the accuracy on task j after training through task i (T x T). None of these functions
modifies its input. Definitions follow Lopez-Paz & Ranzato 2017 (BWT, FWT), Chaudhry et al. 2018
(forgetting) and Kemker et al. 2018 / Díaz-Rodríguez et al. 2018 (retention as a ratio).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def _square(matrix: Matrix) -> np.ndarray:
    r = np.asarray(matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"an accuracy matrix must be square and non-empty, got shape {r.shape}")
    return r


def average_accuracy(matrix: Matrix) -> float:
    """Mean accuracy over all tasks after the last one: mean_j R[T-1][j]."""
    return float(_square(matrix)[-1].mean())


def learning_accuracy(matrix: Matrix) -> float:
    """Mean accuracy on each task right after learning it: mean_j R[j][j] (plasticity)."""
    return float(np.diag(_square(matrix)).mean())


def average_retention(matrix: Matrix) -> float:
    """Share of each earlier task's just-learned accuracy kept at the end:
    mean over j < T-1 of R[T-1][j] / R[j][j]. NaN with one task."""
    r = _square(matrix)
    t = len(r)
    if t < 2:
        return float("nan")
    return float(np.mean([r[-1, j] / r[j, j] if r[j, j] > 0 else 0.0 for j in range(t - 1)]))


def backward_transfer(matrix: Matrix) -> float:
    """BWT = mean over j < T-1 of R[T-1][j] - R[j][j] (negative: forgetting)."""
    r = _square(matrix)
    if len(r) < 2:
        return float("nan")
    return float(np.mean([r[-1, j] - r[j, j] for j in range(len(r) - 1)]))


def forward_transfer(matrix: Matrix, baseline: Sequence[float]) -> float:
    """FWT = mean over j > 0 of R[j-1][j] - b[j], b[j] the accuracy of the untrained model on task j."""
    r = _square(matrix)
    b = np.asarray(baseline, dtype=np.float64)
    if len(b) != len(r):
        raise ValueError(f"baseline has {len(b)} entries for {len(r)} tasks")
    if len(r) < 2:
        return float("nan")
    return float(np.mean([r[j - 1, j] - b[j] for j in range(1, len(r))]))


def forgetting(matrix: Matrix) -> float:
    """Mean over j < T-1 of (best accuracy on j before the end) - (final accuracy on j)."""
    r = _square(matrix)
    t = len(r)
    if t < 2:
        return float("nan")
    return float(np.mean([r[j: t - 1, j].max() - r[-1, j] for j in range(t - 1)]))


def specialist_retention(matrix: Matrix, specialist: Sequence[float]) -> float:
    """Mean over all tasks of R[T-1][j] / s[j], s[j] the accuracy of a model trained on task j alone."""
    r = _square(matrix)
    s = np.asarray(specialist, dtype=np.float64)
    if len(s) != len(r):
        raise ValueError(f"specialist has {len(s)} entries for {len(r)} tasks")
    return float(np.mean(r[-1] / s))


def summary(matrix: Matrix, baseline: Sequence[float] | None = None,
            specialist: Sequence[float] | None = None) -> dict[str, float]:
    """Every metric at once, under the names the JSON output uses."""
    out = {"average_accuracy": average_accuracy(matrix), "learning_accuracy": learning_accuracy(matrix),
           "average_retention": average_retention(matrix), "bwt": backward_transfer(matrix),
           "forgetting": forgetting(matrix),
           "fwt": forward_transfer(matrix, baseline) if baseline is not None else float("nan")}
    if specialist is not None:
        out["specialist_retention"] = specialist_retention(matrix, specialist)
    return out
