"""Consolidation in a PyTorch Lightning run.

    callback = ConsolidationCallback(build_strategy("ewc", {"strength": 1000.0}))
    for task_loader in tasks:                        # one Trainer.fit() per task
        L.Trainer(max_epochs=5, callbacks=[callback]).fit(module, task_loader)

`on_train_start` -> before_task, `on_after_backward` -> after_backward (the penalty's gradient),
`on_train_batch_end` -> after_step, `on_train_end` -> after_task on the fit's training batches, and
`state_dict`/`load_state_dict` carry the strategy's state in Lightning checkpoints. The
LightningModule is what the strategy protects, and what it calls to estimate importance: its
`forward(x)` must return logits.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lifelong.strategies.base import Strategy


class ConsolidationCallback(L.Callback):
    def __init__(self, strategy: Strategy, task_id: int = 0):
        self.strategy, self.task_id = strategy, task_id

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.strategy.before_task(pl_module, self.task_id)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.strategy.after_backward(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.strategy.after_step(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.train_dataloader
        if data is None:
            raise RuntimeError("the Lightning trainer has no training dataloader to estimate importance on")
        with torch.enable_grad():
            self.strategy.after_task(pl_module, self.task_id, data)
        self.task_id += 1

    def state_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "strategy": self.strategy.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.task_id = state_dict["task_id"]
        self.strategy.load_state_dict(state_dict["strategy"])
