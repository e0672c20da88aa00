"""A bounded memory of past samples for rehearsal.

Selection:
- ``reservoir`` (Vitter 1985): every sample seen so far is in memory with the same probability
  capacity / seen, whatever the order of arrival.
- ``balanced``: a class-balanced reservoir (Chrysakis & Moens 2020, "CBRS"): a sample of a class
  holding less than the largest class's share evicts a random sample of the largest class; a
  sample of a largest class replaces one of its own class with probability stored / seen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.data.task import Batch

SELECTIONS = ("reservoir", "balanced")


class ReplayMemory:
    def __init__(self, capacity: int, selection: str = "reservoir", generator: torch.Generator | None = None):
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
        self.capacity, self.selection = capacity, selection
        self.generator = generator or torch.Generator().manual_seed(0)
        self.x: Tensor | None = None
        self.y = torch.zeros(capacity, dtype=torch.long)
        self.task = torch.zeros(capacity, dtype=torch.long)
        self.size = 0
        self.seen = 0
        self.seen_per_class: dict[int, int] = {}

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        stored = 0 if self.x is None else self.x[: self.size].nbytes
        return stored + self.y[: self.size].nbytes + self.task[: self.size].nbytes

    def _put(self, slots: Tensor, batch: Batch, rows: Tensor) -> None:
        assert self.x is not None
        self.x[slots] = batch.x[rows].to(self.x.dtype)
        self.y[slots] = batch.y[rows]
        self.task[slots] = batch.task[rows]

    def add(self, batch: Batch) -> None:
        """Offer every sample of a batch to the memory."""
        if self.capacity == 0 or len(batch.y) == 0:
            return
        if self.x is None:
            self.x = torch.zeros((self.capacity, *batch.x.shape[1:]), dtype=batch.x.dtype)
        n = len(batch.y)
        free = min(self.capacity - self.size, n)
        if free:
            self._put(torch.arange(self.size, self.size + free), batch, torch.arange(free))
            self.size += free
            for c in batch.y[:free].tolist():
                self.seen_per_class[c] = self.seen_per_class.get(c, 0) + 1
            self.seen += free
        if self.selection == "reservoir":
            self._reservoir(batch, torch.arange(free, n))
        else:
            for row in range(free, n):
                self._balanced(batch, row)

    def _reservoir(self, batch: Batch, rows: Tensor) -> None:
        if len(rows) == 0:
            return
        counts = self.seen + torch.arange(1, len(rows) + 1)  # seen count including each new sample
        slots = (torch.rand(len(rows), generator=self.generator, dtype=torch.float64) * counts).long()
        self.seen += len(rows)
        for c in batch.y[rows].tolist():
            self.seen_per_class[c] = self.seen_per_class.get(c, 0) + 1
        keep = slots < self.capacity
        last: dict[int, int] = {}  # a slot drawn twice keeps the later sample, as a sequential reservoir does
        for slot, row in zip(slots[keep].tolist(), rows[keep].tolist(), strict=True):
            last[slot] = row
        if last:
            self._put(torch.tensor(list(last)), batch, torch.tensor(list(last.values())))

    def _balanced(self, batch: Batch, row: int) -> None:
        label = int(batch.y[row])
        self.seen += 1
        self.seen_per_class[label] = self.seen_per_class.get(label, 0) + 1
        stored = self.y[: self.size]
        counts = torch.bincount(stored, minlength=label + 1)
        largest = int(counts.max())
        if int(counts[label]) < largest:
            victims = (stored == int(torch.argmax(counts))).nonzero().squeeze(1)
        elif torch.rand((), generator=self.generator) < counts[label] / self.seen_per_class[label]:
            victims = (stored == label).nonzero().squeeze(1)
        else:
            return
        slot = victims[torch.randint(len(victims), (1,), generator=self.generator)]
        self._put(slot, batch, torch.tensor([row]))

    def sample(self, n: int) -> Batch:
        """Up to `n` stored samples, drawn without replacement."""
        if self.size == 0 or self.x is None:
            raise ValueError("cannot sample from an empty memory")
        idx = torch.randperm(self.size, generator=self.generator)[:n]
        return Batch(self.x[idx], self.y[idx], self.task[idx])

    def class_counts(self) -> dict[int, int]:
        return {int(c): int(k) for c, k in zip(*self.y[: self.size].unique(return_counts=True), strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "selection": self.selection, "size": self.size, "seen": self.seen,
                "seen_per_class": dict(self.seen_per_class), "generator": self.generator.get_state(),
                "x": None if self.x is None else self.x[: self.size].clone(),
                "y": self.y[: self.size].clone(), "task": self.task[: self.size].clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"], state["selection"], self.generator)  # type: ignore[misc]
        self.generator.set_state(state["generator"])
        self.size, self.seen = state["size"], state["seen"]
        self.seen_per_class = {int(k): int(v) for k, v in state["seen_per_class"].items()}
        if state["x"] is not None:
            self.x = torch.zeros((self.capacity, *state["x"].shape[1:]), dtype=state["x"].dtype)
            self.x[: self.size] = state["x"]
        self.y[: self.size] = state["y"]
        self.task[: self.size] = state["task"]
