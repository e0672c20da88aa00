"""`AccuracyMatrix`: the accuracy matrix, filled row by row as a stream is learned."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lifelong.evaluation import functional as fn


class AccuracyMatrix:
    """update / compute / reset, in the shape torchmetrics made familiar.

    >>> m = AccuracyMatrix(2)
    >>> m.update(0, [0.9, 0.1]); m.update(1, [0.6, 0.8])
    >>> round(m.compute()["average_retention"], 3)
    0.667
    """

    def __init__(self, num_tasks: int, baseline: Sequence[float] | None = None):
        self.num_tasks = num_tasks
        self.baseline = None if baseline is None else list(baseline)
        self.reset()

    def reset(self) -> None:
        self.values = np.full((self.num_tasks, self.num_tasks), np.nan)
        self.rows_done = 0

    def update(self, trained_through: int, accuracies: Sequence[float]) -> None:
        """Record the accuracies on every task after training through task `trained_through`."""
        if len(accuracies) != self.num_tasks:
            raise ValueError(f"expected {self.num_tasks} accuracies, got {len(accuracies)}")
        if not 0 <= trained_through < self.num_tasks:
            raise ValueError(f"task index {trained_through} outside 0..{self.num_tasks - 1}")
        self.values[trained_through] = np.asarray(accuracies, dtype=np.float64)
        self.rows_done = max(self.rows_done, trained_through + 1)

    def compute(self, specialist: Sequence[float] | None = None,
                forward_transfer: bool = True) -> dict[str, float | None]:
        """Metrics of the tasks learned so far (the top-left square of the matrix).

        `forward_transfer=False` where task j's classes cannot be scored before task j is learned
        (class-incremental streams: R[j-1][j] is 0 by construction), so FWT is None, not a number."""
        if self.rows_done == 0:
            raise ValueError("no row recorded yet")
        k = self.rows_done
        base = None if self.baseline is None or not forward_transfer else self.baseline[:k]
        out: dict[str, float | None] = {**fn.summary(self.values[:k, :k], base,
                                                     None if specialist is None else list(specialist)[:k])}
        if base is None:
            out["fwt"] = None
        return out

    def tolist(self) -> list[list[float | None]]:
        return [[None if np.isnan(v) else float(v) for v in row] for row in self.values]

    @classmethod
    def from_list(cls, rows: Sequence[Sequence[float | None]], baseline: Sequence[float] | None = None
                  ) -> AccuracyMatrix:
        m = cls(len(rows), baseline)
        for i, row in enumerate(rows):
            if all(v is not None for v in row):
                m.update(i, [float(v) for v in row])  # type: ignore[arg-type]
        return m
