"""The learner for language models: lifelong's `Learner` with a next-token loss and LM scores.

Training is the Learner's own loop (`fit`, `train_step`), so every strategy hook runs unchanged:
replay's `extend_batch`, distillation's `extra_loss`, consolidation's `after_backward`, importance
in `after_task` (per-sample Fisher over whole sequences, lifelong.importance). The training loss is
the strategy's `loss` hook, whose default takes [N, L, V] logits against [N, L] next tokens (the
mean over the tokens that count, `next_token_loss`); only the scores differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.data.task import BatchLoader, Task, TaskData, TaskStream
from lifelong.importance.estimate import IGNORE_INDEX
from lifelong.learner import Learner


def next_token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the tokens whose target is not IGNORE_INDEX (padding)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


class LMLearner(Learner):
    """A `Learner` for next-token prediction.

    `evaluate` returns, per task, the next-token accuracy over its held-out windows, or the task's
    own evaluator's score (exact match on fact questions); `evaluate_lm` adds the loss.
    """

    @torch.no_grad()
    def score_task(self, task: Task, split: str = "test") -> dict[str, float]:
        """{"loss", "accuracy"} over a task's held-out windows (nats and share of next tokens right),
        or {"exact_match"} for a task scored by its own evaluator."""
        was_training = self.model.training
        self.model.eval()
        try:
            if task.evaluator is not None:
                return {"exact_match": float(task.evaluator(self.model, task.id, split))}
            total_loss, correct, count = 0.0, 0, 0
            for b in BatchLoader([TaskData(task.eval_data(split), task.id)], self.config.eval_batch,
                                 device=self.device):
                logits = self.model(b.x, b.task)
                keep = b.y != IGNORE_INDEX
                total_loss += float(F.cross_entropy(logits[keep], b.y[keep], reduction="sum"))
                correct += int((logits.argmax(-1)[keep] == b.y[keep]).sum())
                count += int(keep.sum())
            return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}
        finally:
            self.model.train(was_training)

    def evaluate_lm(self, stream: TaskStream, split: str = "test") -> list[dict[str, float]]:
        return [self.score_task(task, split) for task in stream]

    def evaluate_details(self, stream: TaskStream, split: str = "test",
                         position: int | None = None) -> tuple[list[float], float | None]:
        scores = self.evaluate_lm(stream, split)
        return [s.get("accuracy", s.get("exact_match", math.nan)) for s in scores], None

    def task_accuracy(self, stream: TaskStream, index: int, split: str = "test", position: int | None = None) -> float:
        s = self.score_task(stream[index], split)
        return s.get("accuracy", s.get("exact_match", math.nan))
