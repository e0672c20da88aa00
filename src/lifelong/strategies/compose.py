"""Several strategies as one (`ewc+replay`): each hook runs every part in order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.task import Batch, TaskData, TaskStream
from lifelong.strategies.base import Strategy


class Compose(Strategy):
    def __init__(self, parts: list[Strategy]):
        if not parts:
            raise ValueError("Compose needs at least one strategy")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"a strategy appears twice in {'+'.join(names)}")
        self.parts = parts
        self.name = "+".join(names)  # type: ignore[misc]

    def before_task(self, model: nn.Module, task_id: int) -> None:
        for p in self.parts:
            p.before_task(model, task_id)

    def train_data(self, stream: TaskStream, task_id: int) -> list[TaskData]:
        # Only joint training changes the data; at most one part may.
        changing = [p for p in self.parts if type(p).train_data is not Strategy.train_data]
        if len(changing) > 1:
            raise ValueError(f"{self.name}: more than one part changes the training data")
        return changing[0].train_data(stream, task_id) if changing else super().train_data(stream, task_id)

    def extend_batch(self, batch: Batch) -> Batch:
        for p in self.parts:
            batch = p.extend_batch(batch)
        return batch

    def loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor:
        # Only iCaRL replaces the loss; at most one part may.
        own = [p for p in self.parts if type(p).loss is not Strategy.loss]
        if len(own) > 1:
            raise ValueError(f"{self.name}: more than one part replaces the batch's loss")
        return own[0].loss(model, batch, logits) if own else super().loss(model, batch, logits)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        terms = [t for t in (p.extra_loss(model, batch, logits) for p in self.parts) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def after_backward(self, model: nn.Module) -> None:
        for p in self.parts:
            p.after_backward(model)

    def after_step(self, model: nn.Module) -> None:
        for p in self.parts:
            p.after_step(model)

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        for p in self.parts:
            p.after_task(model, task_id, batches)

    def predict(self, model: nn.Module, x: Any, task: Tensor, logits: Tensor) -> Tensor:
        for p in self.parts:
            logits = p.predict(model, x, task, logits)
        return logits

    def penalty(self, model: nn.Module) -> Tensor:
        return sum((p.penalty(model) for p in self.parts), torch.zeros(()))

    def state_dict(self) -> dict[str, Any]:
        return {p.name: p.state_dict() for p in self.parts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {p.name for p in self.parts}:
            raise ValueError(f"state for {sorted(state)} does not fit {self.name}")
        for p in self.parts:
            p.load_state_dict(state[p.name])
