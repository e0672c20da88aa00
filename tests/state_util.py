"""Helper of the strategy tests: a learner's model and strategy state through torch.save and back."""

from __future__ import annotations

import io
from typing import Any

import torch


def saved_state(learner: Any) -> dict[str, Any]:
    """{"model", "strategy"} as a checkpoint holds them, after a round trip through bytes."""
    buffer = io.BytesIO()
    torch.save({"model": learner.model.state_dict(), "strategy": learner.strategy.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def load_state(learner: Any, saved: dict[str, Any]) -> None:
    learner.model.load_state_dict(saved["model"])
    learner.strategy.load_state_dict(saved["strategy"])
