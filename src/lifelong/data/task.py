"""Tasks, task streams and fast batching.

A `Task` holds ordinary tensors-backed datasets whose labels are *global* class ids. A `TaskStream`
is a plain sequence of tasks plus the scenario that decides which classes compete at each point:

- task-incremental: each sample's own task's classes (one head per task);
- domain-incremental: every class, every time (one shared head, same labels in each task);
- class-incremental: every class seen so far (one shared head, no task id at test time).

Models output logits over the whole label space; `TaskStream.class_mask` says which of them are
live, so a multi-head model is simply a masked shared output layer (row-for-row the same thing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lifelong.config import Config

SCENARIOS = ("task", "domain", "class")


class Batch(NamedTuple):
    """One mini-batch: inputs, global labels and the task id of every sample. `mask` (bool
    [B, classes]), when a strategy sets it, further restricts which classes each sample's loss
    sees (ER-ACE: the new samples compete only among the current task's classes)."""

    x: Any
    y: Tensor
    task: Tensor
    mask: Tensor | None = None


class ArrayDataset(torch.utils.data.Dataset):
    """Inputs and labels in memory, fetched a whole batch at a time.

    `transform` maps a batch of inputs to a batch of inputs (a pixel permutation, a rotation); it
    runs per batch so that ten permuted copies of a dataset cost one copy of memory.
    """

    def __init__(self, x: Tensor, y: Tensor, transform: Callable[[Tensor], Tensor] | None = None):
        if len(x) != len(y):
            raise ValueError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
        self.x, self.y, self.transform = x, y.long(), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.get_batch(torch.tensor([i]))
        return x[0], y[0]

    def get_batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        x = self.x[idx]
        return (self.transform(x) if self.transform else x), self.y[idx]

    def split(self, n_last: int) -> tuple[ArrayDataset, ArrayDataset]:
        """(all but the last `n_last` samples, the last `n_last`): a held-out validation part."""
        cut = len(self) - n_last
        return (ArrayDataset(self.x[:cut], self.y[:cut], self.transform),
                ArrayDataset(self.x[cut:], self.y[cut:], self.transform))

    def subset(self, idx: Tensor) -> ArrayDataset:
        return ArrayDataset(self.x[idx], self.y[idx], self.transform)


def fetch(dataset: Any, idx: Tensor) -> tuple[Any, Tensor]:
    """A batch from any map-style dataset: fast path for `get_batch`, else item by item."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)
    items = [dataset[int(i)] for i in idx]
    return torch.utils.data.default_collate(items)[:2]


@dataclass(frozen=True)
class TaskData:
    """A dataset together with the task id its samples belong to."""

    data: Any
    task_id: int

    def __len__(self) -> int:
        return len(self.data)


class BatchLoader:
    """Iterates `Batch`es over one or more `TaskData` parts (several parts: joint training).

    Deterministic: a shuffled epoch is drawn from the given generator.
    """

    def __init__(self, parts: Sequence[TaskData], batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, max_samples: int | None = None,
                 shard: tuple[int, int] = (0, 1), device: torch.device | str | None = None):
        """`shard=(rank, ranks)`: this rank's share under DDP, every ranks-th sample of the (same)
        order, in batches of batch_size // ranks. `device`: where the batches go (None: where the data is)."""
        self.parts, self.shuffle, self.device = list(parts), shuffle, device
        self.generator, self.max_samples, self.shard = generator, max_samples, shard
        self.batch_size = max(1, batch_size // shard[1])
        self.sizes = torch.tensor([len(p) for p in self.parts])
        self.offsets = torch.cumsum(self.sizes, 0) - self.sizes

    def __len__(self) -> int:
        n = self.num_samples // self.shard[1]
        return (n + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        n = int(self.sizes.sum())
        return n if self.max_samples is None else min(n, self.max_samples)

    def __iter__(self) -> Iterator[Batch]:
        total = int(self.sizes.sum())
        order = torch.randperm(total, generator=self.generator) if self.shuffle else torch.arange(total)
        order = order[: self.num_samples]
        if self.shard[1] > 1:  # every rank the same number of samples, so DDP's ranks step together
            order = order[: len(order) - len(order) % self.shard[1]][self.shard[0]:: self.shard[1]]
        for start in range(0, len(order), self.batch_size):
            batch = self._gather(order[start: start + self.batch_size])
            yield batch if self.device is None else _to(batch, self.device)

    def _gather(self, idx: Tensor) -> Batch:
        if len(self.parts) == 1:
            x, y = fetch(self.parts[0].data, idx)
            return Batch(x, y, torch.full((len(y),), self.parts[0].task_id, dtype=torch.long))
        part = torch.bucketize(idx, self.offsets, right=True) - 1
        xs, ys, ts = [], [], []
        for p in part.unique().tolist():
            local = idx[part == p] - self.offsets[p]
            x, y = fetch(self.parts[p].data, local)
            xs.append(x)
            ys.append(y)
            ts.append(torch.full((len(y),), self.parts[p].task_id, dtype=torch.long))
        return Batch(concat_inputs(xs), torch.cat(ys), torch.cat(ts))


def _to(batch: Batch, device: torch.device | str) -> Batch:
    """The batch on `device` (dict inputs, tokenised text, too); copies overlap compute where they can."""
    x = ({k: v.to(device, non_blocking=True) for k, v in batch.x.items()} if isinstance(batch.x, dict)
         else batch.x.to(device, non_blocking=True))
    mask = None if batch.mask is None else batch.mask.to(device, non_blocking=True)
    return Batch(x, batch.y.to(device, non_blocking=True), batch.task.to(device, non_blocking=True), mask)


def concat_inputs(xs: Sequence[Any]) -> Any:
    """Concatenate batches of inputs: tensors, or dicts of tensors (tokenised text)."""
    if isinstance(xs[0], dict):
        return {k: torch.cat([x[k] for x in xs]) for k in xs[0]}
    return torch.cat(list(xs))


@dataclass(frozen=True)
class Task:
    """One task: its id, its datasets (labels are global class ids) and its classes.

    `evaluator(model, task_id, split) -> float`, when given, scores the model on the task instead of
    the accuracy on its evaluation split (control tasks: the mean return of the greedy policy over
    episodes whose seeds depend on the split)."""

    id: int
    train: Any
    test: Any
    classes: tuple[int, ...]
    name: str = ""
    valid: Any = None
    evaluator: Callable[[Any, int, str], float] | None = None

    def eval_data(self, split: str) -> Any:
        if self.evaluator is not None:
            return None
        if split == "test":
            return self.test
        if split == "valid":
            if self.valid is None:
                raise ValueError(f"task {self.id} has no validation split (build it with validation > 0)")
            return self.valid
        raise ValueError(f"unknown split {split!r}; use 'test' or 'valid'")


INPUT_KINDS = ("array", "image", "text", "control")


@dataclass
class InputSpec(Config):
    """What one sample's input is, so that a network can be built for it and a service can read it.

    ``array``: a tensor of `shape` per sample (features, or images given as arrays); ``image``: a grey
    (1) or RGB (3) picture of `shape` [C, H, W], read from image files, which a service takes as PNG or
    JPEG (`resize`: pictures of another size are resized, as the data spec's ``size=`` did); ``text``:
    sentences, given to the model as the frozen MiniLM encoder's embeddings (`encoder="frozen"`, shape
    (384,)) or as token ids for an encoder trained fully or through LoRA (`"finetune"`, `"lora"`, shape
    (max tokens,)); ``control``: an observation vector of `shape`, padded to one size across a stream's
    environments. `pixels`: the data holds bytes 0-255 that the model sees divided by 255 (images,
    ``uint8`` arrays), so a service takes the values as the data holds them."""

    kind: str = "array"
    shape: tuple[int, ...] = ()
    encoder: str = ""
    pixels: bool = False
    resize: bool = False

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input kind must be one of {INPUT_KINDS}, not {self.kind!r}")


@dataclass
class ReturnScale(Config):
    """Control streams: each task's mean return of a random policy and of the expert on the evaluation
    episodes; scores are normalised as (return - random) / (expert - random)."""

    random: list[float]
    expert: list[float]


@dataclass
class TaskStream(Sequence[Task]):
    """A plain sequence of tasks and the scenario under which they are learned.

    `input` describes one sample's input (inferred from the first task's data when not given);
    `returns`, for control streams, the return scale that normalises scores."""

    tasks: list[Task]
    num_classes: int
    scenario: str
    name: str = ""
    class_names: list[str] | None = None
    input: InputSpec | None = None
    returns: ReturnScale | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {SCENARIOS}")
        for i, task in enumerate(self.tasks):
            if task.id != i:
                raise ValueError(f"task ids must be 0..T-1 in order; task {i} has id {task.id}")
        if self.input is None and self.tasks:
            self.input = _infer_input(self.tasks[0])

    @property
    def input_spec(self) -> InputSpec:
        if self.input is None:
            raise ValueError("an empty stream has no input spec")
        return self.input

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TaskStream(self.tasks[i], self.num_classes, self.scenario, self.name,
                              self.class_names, self.input, self.returns)
        return self.tasks[i]

    def class_mask(self, current: int) -> Tensor:
        """Bool [T, C]: row t holds the classes a sample of task t may be assigned to while the
        learner is at task `current` (training it, or evaluating right after it)."""
        mask = torch.zeros(len(self.tasks), self.num_classes, dtype=torch.bool)
        if self.scenario == "domain":
            mask[:] = True
        elif self.scenario == "task":
            for t in self.tasks:
                mask[t.id, list(t.classes)] = True
        else:
            seen = sorted({c for t in self.tasks[: current + 1] for c in t.classes})
            mask[:, seen] = True
        return mask


def _infer_input(task: Task) -> InputSpec:
    """An array input of the shape of the task's first sample (dict inputs: token ids)."""
    data = task.train if task.train is not None and len(task.train) else task.test
    if data is None or not len(data):
        return InputSpec("array")
    x, _ = fetch(data, torch.tensor([0]))
    if isinstance(x, dict):
        return InputSpec("text", tuple(x["input_ids"].shape[1:]), "finetune")
    return InputSpec("array", tuple(x.shape[1:]))
