"""The influence check's clusters (lifelong.service.influence.suspects) are found with one growing step,
whatever `collision_grow_steps` the screens use: the repeated steps were chosen on the screens'
detection, and a grown cluster is more training data the second candidate goes without (on the
reported CLINC150 adaptive-boundary 30 %, seed 2, that cost a guard set 1.5 points and kept the whole
cluster: docs/poisoning.md, "Images in the input space")."""

from __future__ import annotations

from typing import Any

import torch

from lifelong.screening import ScreenConfig
from lifelong.service import influence


class _Model(torch.nn.Module):
    def features(self, x: torch.Tensor, task: Any = None) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor, task: Any = None) -> torch.Tensor:
        return x


class _Spec:
    def __init__(self) -> None:
        self.tasks = [{"classes": [0]}]
        self.labels = ["a", "b"]


class _Candidate:
    model = _Model()
    spec = _Spec()


def test_suspects_use_one_growing_step(monkeypatch):
    seen: list[ScreenConfig] = []

    def spy(z, names, trusted, config, *args):
        seen.append(config)
        return []

    monkeypatch.setattr(influence, "find_collisions", spy)
    config = ScreenConfig(collision_grow_steps=3)
    influence.suspects(_Candidate(), [], torch.randn(6, 4), ["a", "b"] * 3, config)  # type: ignore[arg-type]
    assert seen and seen[0].collision_grow_steps == 1
    assert seen[0].collision_min_share == max(config.collision_min_share, config.influence_min_share)
