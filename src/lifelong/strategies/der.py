"""Dark experience replay (Buzzega et al. 2020): store the logits with the samples, and match them.

DER adds alpha * MSE(f(x_m), z_m) on a batch drawn from memory (z_m the logits stored when x_m
was seen); DER++ adds beta * CE(f(x_m'), y_m') on a second batch. The memory is a reservoir over
the stream, filled as batches arrive. The stored logits cover every class, also those not yet
learned; the match covers the classes live now. With `ace`, the new batch's own loss lets only the
current task's classes compete, as in ER-ACE (Caccia et al. 2022), so learning new classes does not
push the old classes' logits down; the memory terms still cover every class seen so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.devices import model_device
from lifelong.strategies.base import Strategy, StrategyConfig
from lifelong.strategies.memory import ReplayMemory


@dataclass
class DERConfig(StrategyConfig):
    memory: int = 600
    selection: str = "reservoir"
    alpha: float = 0.3  # weight of the logit match
    beta: float = 0.0  # weight of the label loss on a second memory batch (DER++ when > 0)
    replay_batch: int | None = None  # memory samples per term; None: as many as the new batch
    ace: bool = False  # asymmetric loss: the new batch's cross-entropy over the current task's classes only
    logits_from: str = "eval"  # stored logits from a pass in eval mode (no dropout noise), or "train" mode
    memory_device: str = "model"  # where the memory is kept: "model" (the model's device) or "cpu"

    def __post_init__(self) -> None:
        if self.logits_from not in ("eval", "train"):
            raise ValueError(f"logits_from must be 'eval' or 'train', not {self.logits_from!r}")


@dataclass
class DERPPConfig(DERConfig):
    alpha: float = 2.0  # FINDINGS: validation accuracy kept rising with alpha and beta up to 2
    beta: float = 2.0


@dataclass
class DERACEConfig(DERPPConfig):
    ace: bool = True  # DER++ with ER-ACE's asymmetric loss on the new batch


def logit_match(current: Tensor, stored: Tensor) -> Tensor:
    """Mean squared difference over the finite entries (masked classes are -inf)."""
    live = torch.isfinite(stored) & torch.isfinite(current)
    if not live.any():
        return current.sum() * 0.0
    return F.mse_loss(current[live], stored[live])


class DER(Strategy):
    name = "der"
    extra_forward = True

    def __init__(self, config: DERConfig | None = None):
        self.config = config or DERConfig()
        if self.config.beta > 0:
            self.name = "der-ace" if self.config.ace else "der++"  # type: ignore[misc]
        self.memory = ReplayMemory(self.config.memory, self.config.selection,
                                   torch.Generator().manual_seed(self.config.seed), self.config.memory_device)
        self.current = torch.zeros(0, dtype=torch.bool)

    def before_task(self, model: nn.Module, task_id: int) -> None:
        self.current = torch.zeros(int(getattr(model, "num_classes", 0)), dtype=torch.bool,
                                   device=model_device(model))

    def extend_batch(self, batch: Batch) -> Batch:
        if not self.config.ace or not len(self.current):
            return batch
        self.current[batch.y] = True
        mask = self.current.expand(len(batch.y), -1)
        return Batch(batch.x, batch.y, batch.task, mask if batch.mask is None else mask & batch.mask)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        cfg = self.config
        k = cfg.replay_batch or len(batch.y)
        loss = None
        if len(self.memory):
            old, extras = self.memory.sample_with_extras(k)
            loss = cfg.alpha * logit_match(model(old.x, old.task), extras["logits"])
            if cfg.beta > 0:
                old2 = self.memory.sample(k)
                loss = loss + cfg.beta * F.cross_entropy(model(old2.x, old2.task), old2.y)
        self.memory.add(batch, {"logits": self._targets(model, batch)})
        return loss

    @torch.no_grad()
    def _targets(self, model: nn.Module, batch: Batch) -> Tensor:
        """Every class's logit, also of classes not yet live: matching those keeps the untrained new
        classes low on old samples (Buzzega et al. store all). Mammoth stores the training pass's own
        outputs; under dropout those are noisy targets, so by default they come from an eval-mode pass."""
        was_training = model.training
        model.train(self.config.logits_from == "train")
        try:
            return model(batch.x)
        finally:
            model.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
