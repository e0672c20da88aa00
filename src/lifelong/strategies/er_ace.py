"""Experience replay with asymmetric cross-entropy (Caccia et al. 2022, ER-ACE).

The new samples' loss lets only the current task's classes compete (so learning them does not push
old classes' logits down); the replayed samples' loss lets every class seen so far compete. The
memory is a reservoir filled as batches arrive, so the current classes are in memory during their
own task (filled only at its end, they would never compete with old ones in the replay loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lifelong.data.task import Batch, concat_inputs
from lifelong.devices import model_device
from lifelong.strategies.replay import Replay, ReplayConfig


@dataclass
class ERACEConfig(ReplayConfig):
    selection: str = "reservoir"  # Caccia et al.'s reservoir: the current classes enter memory as they arrive


class ERACE(Replay):
    name = "er-ace"

    def __init__(self, config: ERACEConfig | None = None):
        super().__init__(config or ERACEConfig())
        self.current = torch.zeros(0, dtype=torch.bool)

    def before_task(self, model: nn.Module, task_id: int) -> None:
        self.current = torch.zeros(int(getattr(model, "num_classes")), dtype=torch.bool,  # noqa: B009
                                   device=model_device(model))

    def extend_batch(self, batch: Batch) -> Batch:
        self.current[batch.y] = True
        new_mask = self.current.expand(len(batch.y), -1)
        if not len(self.memory):
            self.memory.add(batch)
            return Batch(batch.x, batch.y, batch.task, new_mask)
        old = self.memory.sample(self.config.replay_batch or len(batch.y))
        # the model's own mask applies to the stored samples
        old_mask = torch.ones(len(old.y), len(self.current), dtype=torch.bool, device=self.current.device)
        self.memory.add(batch)
        return Batch(concat_inputs([batch.x, old.x]), torch.cat([batch.y, old.y]), torch.cat([batch.task, old.task]),
                     torch.cat([new_mask, old_mask]))
