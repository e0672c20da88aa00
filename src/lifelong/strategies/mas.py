"""Memory aware synapses (Aljundi et al. 2018): importance is how much the output moves.

Omega = mean over samples of |d ||f(x)||^2 / d theta|, needing no labels; it accumulates over
tasks and the penalty is anchored at the latest solution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from lifelong.importance import output_sensitivity
from lifelong.strategies.base import Strategy, trainable
from lifelong.strategies.quadratic import Consolidation, ConsolidationConfig


@dataclass
class MASConfig(ConsolidationConfig):
    strength: float = 1.0
    samples: int | None = 1024  # a budget of samples for the importance; None: the whole task (see EWCConfig)


class MAS(Consolidation, Strategy):
    name = "mas"

    def __init__(self, config: MASConfig | None = None):
        self.config = config or MASConfig()
        super().__init__(self.config)

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        omega = output_sensitivity(model, batches, max_samples=self.config.samples)
        self.quadratic.accumulate(omega, {n: p.detach() for n, p in trainable(model).items()})
