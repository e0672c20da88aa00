"""Nearest class mean (NCM): predict the class whose mean representation is closest (cosine).

With a strong pretrained encoder this stores no examples at all, only one mean vector per class,
and does not inherit the output layer's bias toward the newest classes: Zhou et al. 2023
("Revisiting class-incremental learning with pre-trained models", SimpleCIL) report it as the
baseline to beat. `space="input"` averages the model's inputs (a frozen encoder's embeddings);
`space="features"` the representation the model's output layer reads (recomputed after each task
from the stored means' own samples is not possible without examples, so features drift: use it on
frozen representations).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.importance import as_batch
from lifelong.strategies.base import Strategy, StrategyConfig


@dataclass
class NCMConfig(StrategyConfig):
    space: str = "input"  # "input" or "features"

    def __post_init__(self) -> None:
        if self.space not in ("input", "features"):
            raise ValueError(f"space must be 'input' or 'features', not {self.space!r}")


class NCM(Strategy):
    name = "ncm"

    def __init__(self, config: NCMConfig | None = None):
        self.config = config or NCMConfig()
        self.sums: Tensor | None = None  # [C, d] sums of normalised representations
        self.counts: Tensor | None = None

    def _represent(self, model: nn.Module, x: Any, task: Tensor) -> Tensor:
        z = x.flatten(1).float() if self.config.space == "input" else model.features(x, task)  # type: ignore[operator]
        return F.normalize(z, dim=1)

    @torch.no_grad()
    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        num_classes = int(getattr(model, "num_classes"))  # noqa: B009
        for raw in batches:
            b = as_batch(raw)
            z = self._represent(model, b.x, b.task)
            if self.sums is None or self.counts is None or self.sums.shape[0] < num_classes:
                sums = torch.zeros(num_classes, z.shape[1], device=z.device)
                counts = torch.zeros(num_classes, device=z.device)
                if self.sums is not None and self.counts is not None:
                    sums[: len(self.sums)], counts[: len(self.counts)] = self.sums, self.counts
                self.sums, self.counts = sums, counts
            self.sums.index_add_(0, b.y, z)
            self.counts.index_add_(0, b.y, torch.ones(len(b.y), device=z.device))

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Any, task: Tensor, logits: Tensor) -> Tensor:
        if self.sums is None or self.counts is None:
            return logits
        means = F.normalize(self.sums / self.counts.clamp(min=1).unsqueeze(1), dim=1)
        scores = self._represent(model, x, task) @ means.T
        known = (self.counts > 0) & torch.isfinite(logits)
        return scores.masked_fill(~known, float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.counts = state["sums"], state["counts"]
