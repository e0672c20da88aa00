"""Consolidation in a Hugging Face `transformers.Trainer` run (also with peft LoRA models).

    strategy = build_strategy("ewc", {"strength": 1e6})
    callback = ConsolidationCallback(strategy)
    for task_dataset in tasks:                       # one Trainer.train() per task
        Trainer(model, args, train_dataset=task_dataset, callbacks=[callback]).train()

- `on_train_begin`: `before_task`;
- `on_pre_optimizer_step` (after backward, gradient accumulation and clipping): `after_backward`,
  which adds the penalty's gradient in closed form;
- `on_optimizer_step`: `after_step`;
- `on_train_end`: `after_task` on the run's own training batches (importance of what was learned);
  the task counter then advances;
- `on_save`: the strategy's state is written into the checkpoint folder (`lifelong_strategy.pt`);
  `load_state(folder)` restores it.
The strategy sees the model through `Logits(model)`, a module that maps a batch dict (without
labels) to the logits, so importance estimators can call it like any classifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

from lifelong.strategies.base import Strategy

STATE_FILE = "lifelong_strategy.pt"


class Logits(nn.Module):
    """A Hugging Face model as a plain classifier: a dict of input tensors -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model(**inputs).logits


def batches(dataloader: Iterable[dict[str, Tensor]], label_key: str = "labels") -> Iterator[tuple[dict, Tensor]]:
    """(inputs without labels, labels) from a Trainer's dataloader."""
    for batch in dataloader:
        inputs = {k: v for k, v in batch.items() if k != label_key}
        yield inputs, batch[label_key]


class ConsolidationCallback(TrainerCallback):
    """Applies a lifelong strategy to every `Trainer.train()` call, one call per task."""

    def __init__(self, strategy: Strategy, task_id: int = 0):
        self.strategy, self.task_id = strategy, task_id
        self.view: Logits | None = None

    def _view(self, model: nn.Module) -> Logits:
        if self.view is None or self.view.model is not model:
            self.view = Logits(model)
        return self.view

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        self.strategy.before_task(self._view(model), self.task_id)  # type: ignore[arg-type]

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                              **kwargs: Any):
        self.strategy.after_backward(self._view(model))  # type: ignore[arg-type]

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        self.strategy.after_step(self._view(model))  # type: ignore[arg-type]

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                     train_dataloader: Any = None, **kwargs: Any):
        with torch.enable_grad():
            self.strategy.after_task(self._view(model), self.task_id, _Reiterable(train_dataloader))  # type: ignore[arg-type]
        self.task_id += 1

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"task_id": self.task_id, "strategy": self.strategy.state_dict()}, folder / STATE_FILE)

    def load_state(self, checkpoint_folder: str | Path) -> None:
        """Restore the strategy saved with a checkpoint (e.g. before resuming from it)."""
        saved = torch.load(Path(checkpoint_folder) / STATE_FILE, weights_only=False)
        self.task_id = saved["task_id"]
        self.strategy.load_state_dict(saved["strategy"])


class _Reiterable:
    def __init__(self, dataloader: Iterable[dict[str, Tensor]]):
        self.dataloader = dataloader

    def __iter__(self) -> Iterator[tuple[dict, Tensor]]:
        return batches(self.dataloader)
