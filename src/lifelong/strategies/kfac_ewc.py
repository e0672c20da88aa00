"""EWC with Kronecker-factored Fisher blocks (`kfac-ewc`) and its online Laplace form (`online-kfac-ewc`).

After each task, per Linear and Conv2d layer the Fisher block is approximated by A (x) G (inputs with
a bias column, output gradients; importance/kronecker.py), every other parameter by its exact diagonal
Fisher; while later tasks are learned, strength / 2 * sum_t (theta - theta_t)^T F_t (theta - theta_t)
is added, merged over tasks into one quadratic per layer whose state and step cost do not grow with
the number of tasks (strategies/kronecker.py says how, and what the merge costs in accuracy).

The online form (Ritter, Botev & Barber 2018, "Online structured Laplace approximations for overcoming
catastrophic forgetting"): the precision accumulates, F <- gamma * F + F_t, and the penalty is centred
on the latest solution only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.importance.kronecker import KRONECKER_FISHERS, kronecker_factors
from lifelong.strategies.base import Strategy, StrategyConfig
from lifelong.strategies.kronecker import MERGES, KroneckerPenalty


@dataclass
class KFACEWCConfig(StrategyConfig):
    strength: float = 100.0  # lambda: strength / 2 * sum_t d^T (A_t (x) G_t) d, per-sample Fisher scale
    fisher: str = "true"  # "true" (labels drawn from the model), "empirical" (the data's) or "exact"
    samples: int | None = None  # a budget of samples for the factors; None: the whole task
    online: bool = False  # True: the online Laplace (centred on the latest solution)
    gamma: float = 1.0  # decay of earlier tasks' precision
    merge: str = "nearest"  # how task precisions merge into one Kronecker product: "nearest" or "sum"
    energy: float = 1.0  # share of each factor's trace in exact eigen-directions (< 1: the rest as one level; cheaper)
    rank: int | None = None  # at most this many exact eigen-directions per factor in the step (flat cost)

    def __post_init__(self) -> None:
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0, not {self.strength}")
        if self.fisher not in KRONECKER_FISHERS:
            raise ValueError(f"fisher must be one of {KRONECKER_FISHERS}, not {self.fisher!r}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"samples must be >= 1 or None, not {self.samples}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], not {self.gamma}")
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, not {self.merge!r}")
        if not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], not {self.energy}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1 or None, not {self.rank}")


@dataclass
class OnlineKFACEWCConfig(KFACEWCConfig):
    online: bool = True


class KFACEWC(Strategy):
    """Kronecker-factored EWC; `online=True` gives the online Laplace form."""

    name = "kfac-ewc"

    def __init__(self, config: KFACEWCConfig | None = None):
        self.config = config or KFACEWCConfig()
        if self.config.online:
            self.name = "online-kfac-ewc"  # type: ignore[misc]
        self.kronecker = KroneckerPenalty(self.config.strength, self.config.merge, self.config.energy,
                                          self.config.rank)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def after_backward(self, model: nn.Module) -> None:
        self.kronecker.add_gradient_(model)

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        cfg = self.config
        factors, diagonal = kronecker_factors(model, batches, fisher=cfg.fisher, max_samples=cfg.samples,
                                              generator=self.generator)
        self.kronecker.add(factors, diagonal, model, decay=cfg.gamma, centred=not cfg.online)

    def penalty(self, model: nn.Module) -> Tensor:
        return self.kronecker.value(model)

    def protection(self) -> list[dict[str, Any]]:
        """What is protected, per layer (see `KroneckerPenalty.protection`)."""
        return self.kronecker.protection()

    def state_dict(self) -> dict[str, Any]:
        return {"kronecker": self.kronecker.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kronecker.load_state_dict(state["kronecker"])
        self.generator.set_state(state["generator"])
