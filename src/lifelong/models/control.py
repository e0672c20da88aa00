"""A policy network for task-incremental control: one input layer per task, a shared trunk.

Zero-padding observations of different environments to one size gives the same input dimension a
different meaning in each task; with one shared first layer, consolidating it for one task blocks
the next (lifelong's FINDINGS: EWC then never learned LunarLander). Each task gets its own input
layer instead (and, through the class mask, its own action head); only the trunk is shared.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class TaskInput(nn.Module):
    """`num_tasks` Linear layers in one tensor; each sample goes through its own task's layer."""

    def __init__(self, num_tasks: int, in_features: int, out_features: int):
        super().__init__()
        layers = [nn.Linear(in_features, out_features) for _ in range(num_tasks)]  # the usual initialisation
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        return torch.einsum("noi,ni->no", self.weight[task], x) + self.bias[task]


class TaskInputMLP(nn.Module):
    """TaskInput -> ReLU -> [Linear -> ReLU] * (len(hidden) - 1) -> Linear(out)."""

    takes_task = True

    def __init__(self, num_tasks: int, in_features: int, hidden: Sequence[int] = (64, 64), out_features: int = 9):
        super().__init__()
        self.input = TaskInput(num_tasks, in_features, hidden[0])
        layers: list[nn.Module] = [nn.ReLU()]
        for a, b in itertools.pairwise(hidden):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(hidden[-1], out_features))
        self.trunk = nn.Sequential(*layers)

    @property
    def head(self) -> nn.Linear:
        return self.trunk[-1]  # type: ignore[return-value]

    def features(self, x: Tensor, task: Tensor) -> Tensor:
        return self.trunk[:-1](self.input(x, task))

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        return self.trunk(self.input(x, task))
