"""A bounded memory of past samples for rehearsal.

Selection:
- ``reservoir`` (Vitter 1985): every sample seen so far is in memory with the same probability
  capacity / seen, whatever the order of arrival.
- ``balanced``: a class-balanced reservoir (Chrysakis & Moens 2020, "CBRS"): a sample of a class
  holding less than the largest class's share evicts a random sample of the largest class; a
  sample of a largest class replaces one of its own class with probability stored / seen.
- ``herding`` (Rebuffi et al. 2017, iCaRL): nothing is stored while a task trains; at its end,
  `herd` picks each new class's exemplars greedily so that their running mean of features stays
  closest to the class mean, and every class keeps its first capacity / classes exemplars.

Besides inputs, labels and task ids, a memory can keep `extras` per sample (DER's logits).

Devices: the memory returns batches on the device the batches it is given come from (the model's).
It stores them there too (`storage="model"`), or in CPU memory (`storage="cpu"`: a large memory of
images beside a small GPU). Its random draws come from a CPU generator, whatever the device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.data.task import Batch

SELECTIONS = ("reservoir", "balanced", "herding")
STORAGES = ("model", "cpu")


def herding_order(features: Tensor, m: int) -> Tensor:
    """Indices of `m` samples chosen one at a time so that the mean of the chosen features is as
    close as possible to the mean of all (features are L2-normalised first, as in iCaRL)."""
    f = torch.nn.functional.normalize(features.float(), dim=1)
    target = f.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(f), dtype=torch.bool, device=f.device)
    for k in range(1, min(m, len(f)) + 1):
        distance = ((target - (running + f) / k) ** 2).sum(1)
        distance[~available] = float("inf")
        i = int(torch.argmin(distance))
        chosen.append(i)
        available[i] = False
        running += f[i]
    return torch.tensor(chosen, dtype=torch.long)


class ReplayMemory:
    def __init__(self, capacity: int, selection: str = "reservoir", generator: torch.Generator | None = None,
                 storage: str = "model", device: torch.device | str = "cpu"):
        """`device`: where batches come from and are returned (it follows the batches added)."""
        if storage not in STORAGES:
            raise ValueError(f"memory storage must be one of {STORAGES}, not {storage!r}")
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
        self.capacity, self.selection, self.storage = capacity, selection, storage
        self.generator = generator or torch.Generator().manual_seed(0)
        self.device = torch.device(device)
        where = self.where
        self.x: Tensor | None = None
        self.y = torch.zeros(capacity, dtype=torch.long, device=where)
        self.task = torch.zeros(capacity, dtype=torch.long, device=where)
        self.size = 0
        self.seen = 0
        self.seen_per_class: dict[int, int] = {}
        self.extras: dict[str, Tensor] = {}
        self.rank = torch.zeros(capacity, dtype=torch.long, device=where)  # herding: priority within the class

    @property
    def where(self) -> torch.device:
        """Where the stored tensors are: the model's device, or the CPU."""
        return self.device if self.storage == "model" else torch.device("cpu")

    def _follow(self, batch: Batch) -> None:
        """Take the device of the batches given (the model's): returned batches go there, and, stored on
        the model's device, the stored tensors move there (once, when the model moved)."""
        device = batch.y.device
        if device == self.device:
            return
        self.device = device
        where = self.where
        self.y, self.task, self.rank = self.y.to(where), self.task.to(where), self.rank.to(where)
        self.x = None if self.x is None else self.x.to(where)
        self.extras = {k: v.to(where) for k, v in self.extras.items()}

    def _out(self, batch: Batch) -> Batch:
        return batch if self.where == self.device else Batch(*(t.to(self.device) for t in batch[:3]))

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes of what is stored (inputs, labels, task ids and extras)."""
        stored = 0 if self.x is None else self.x[: self.size].nbytes
        extras = sum(v[: self.size].nbytes for v in self.extras.values())
        return stored + extras + self.y[: self.size].nbytes + self.task[: self.size].nbytes

    def _put(self, slots: Tensor, batch: Batch, rows: Tensor, extras: dict[str, Tensor] | None = None) -> None:
        assert self.x is not None
        where, rows = self.where, rows.to(batch.y.device)
        slots = slots.to(where)
        self.x[slots] = batch.x[rows].to(where, self.x.dtype)
        self.y[slots] = batch.y[rows].to(where)
        self.task[slots] = batch.task[rows].to(where)
        for key, value in (extras or {}).items():
            self.extras[key][slots] = value[rows].to(where, self.extras[key].dtype)

    def _allocate(self, batch: Batch, extras: dict[str, Tensor] | None) -> None:
        self._follow(batch)
        if self.x is None:
            self.x = torch.zeros((self.capacity, *batch.x.shape[1:]), dtype=batch.x.dtype, device=self.where)
        for key, value in (extras or {}).items():
            if key not in self.extras:
                self.extras[key] = torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.where)

    def add(self, batch: Batch, extras: dict[str, Tensor] | None = None) -> Tensor:
        """Offer every sample of a batch (and its extras, e.g. logits) to the memory; returns which
        of the batch's rows it stored."""
        stored = torch.zeros(len(batch.y), dtype=torch.bool)  # on the CPU, like the draws that decide it
        if self.capacity == 0 or len(batch.y) == 0 or self.selection == "herding":
            return stored
        self._allocate(batch, extras)
        n = len(batch.y)
        free = min(self.capacity - self.size, n)
        if free:
            self._put(torch.arange(self.size, self.size + free), batch, torch.arange(free), extras)
            stored[:free] = True
            self.size += free
            for c in batch.y[:free].tolist():
                self.seen_per_class[c] = self.seen_per_class.get(c, 0) + 1
            self.seen += free
        if self.selection == "reservoir":
            stored[self._reservoir(batch, torch.arange(free, n), extras)] = True
        else:
            for row in range(free, n):
                stored[row] = self._balanced(batch, row, extras)
        return stored

    def herd(self, batch: Batch, features: Tensor) -> None:
        """Herding selection (iCaRL) for the classes of `batch` (a whole task's data), then every
        class stored keeps its first capacity // classes exemplars."""
        if self.capacity == 0:
            return
        self._allocate(batch, None)
        classes = sorted(set(self.y[: self.size].tolist()) | set(batch.y.tolist()))
        per_class = max(1, self.capacity // len(classes))
        keep = (self.rank[: self.size] < per_class).nonzero().squeeze(1)  # older classes, trimmed
        kept = Batch(self.x[keep].clone(), self.y[keep].clone(), self.task[keep].clone())  # type: ignore[index]
        kept_rank = self.rank[keep].clone()
        self.size = 0
        self._put(torch.arange(len(keep)), kept, torch.arange(len(keep)))
        self.rank[: len(keep)] = kept_rank
        self.size = len(keep)
        for c in sorted(set(batch.y.tolist())):
            rows = (batch.y == c).nonzero().squeeze(1)
            order = rows[herding_order(features[rows], min(per_class, self.capacity - self.size)).to(rows.device)]
            slots = torch.arange(self.size, self.size + len(order), device=self.where)
            self._put(slots, batch, order)
            self.rank[slots] = torch.arange(len(order), device=self.where)
            self.size += len(order)
            self.seen_per_class[c] = self.seen_per_class.get(c, 0) + len(rows)
        self.seen += len(batch.y)

    def _reservoir(self, batch: Batch, rows: Tensor, extras: dict[str, Tensor] | None = None) -> list[int]:
        if len(rows) == 0:
            return []
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
            self._put(torch.tensor(list(last)), batch, torch.tensor(list(last.values())), extras)
        return list(last.values())

    def _balanced(self, batch: Batch, row: int, extras: dict[str, Tensor] | None = None) -> bool:
        label = int(batch.y[row])
        self.seen += 1
        self.seen_per_class[label] = self.seen_per_class.get(label, 0) + 1
        stored = self.y[: self.size]
        counts = torch.bincount(stored, minlength=label + 1)
        largest = int(counts.max())
        if int(counts[label]) < largest:
            victims = (stored == int(torch.argmax(counts))).nonzero().squeeze(1)
        elif torch.rand((), generator=self.generator) < counts[label].cpu() / self.seen_per_class[label]:
            victims = (stored == label).nonzero().squeeze(1)
        else:
            return False
        slot = victims[torch.randint(len(victims), (1,), generator=self.generator).to(victims.device)]
        self._put(slot, batch, torch.tensor([row]), extras)
        return True

    def sample(self, n: int) -> Batch:
        """Up to `n` stored samples, drawn without replacement."""
        return self.sample_with_extras(n)[0]

    def sample_with_extras(self, n: int) -> tuple[Batch, dict[str, Tensor]]:
        if self.size == 0 or self.x is None:
            raise ValueError("cannot sample from an empty memory")
        idx = torch.randperm(self.size, generator=self.generator)[:n].to(self.where)
        return self.take(idx), {k: v[idx].to(self.device) for k, v in self.extras.items()}

    def take(self, idx: Tensor) -> Batch:
        """The stored samples at `idx`, on the model's device."""
        assert self.x is not None
        idx = idx.to(self.where)
        return self._out(Batch(self.x[idx], self.y[idx], self.task[idx]))

    def all(self) -> Batch:
        """Everything stored, in storage order."""
        if self.x is None:
            raise ValueError("the memory is empty")
        return self._out(Batch(self.x[: self.size], self.y[: self.size], self.task[: self.size]))

    def class_counts(self) -> dict[int, int]:
        return {int(c): int(k) for c, k in zip(*self.y[: self.size].unique(return_counts=True), strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "selection": self.selection, "storage": self.storage,
                "size": self.size, "seen": self.seen,
                "seen_per_class": dict(self.seen_per_class), "generator": self.generator.get_state(),
                "x": None if self.x is None else self.x[: self.size].clone(),
                "y": self.y[: self.size].clone(), "task": self.task[: self.size].clone(),
                "rank": self.rank[: self.size].clone(),
                "extras": {k: v[: self.size].clone() for k, v in self.extras.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # stored where the state is (the learner moves it to the model's device)
        device = state["y"].device
        self.__init__(state["capacity"], state["selection"], self.generator,  # type: ignore[misc]
                      state.get("storage", self.storage), device)
        self.generator.set_state(state["generator"])
        self.size, self.seen = state["size"], state["seen"]
        self.seen_per_class = {int(k): int(v) for k, v in state["seen_per_class"].items()}
        if state["x"] is not None:
            self.x = torch.zeros((self.capacity, *state["x"].shape[1:]), dtype=state["x"].dtype, device=self.where)
            self.x[: self.size] = state["x"]
        self.y[: self.size] = state["y"]
        self.task[: self.size] = state["task"]
        self.rank[: self.size] = state["rank"]
        for key, value in state["extras"].items():
            self.extras[key] = torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.where)
            self.extras[key][: self.size] = value
