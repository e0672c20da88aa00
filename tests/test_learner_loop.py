"""`Learner.start_task` for a loop of one's own around `train_step` (benchmarks/lm_method_cost.py times
steps that way): the same batches, hooks and optimizer as `fit`, so the same weights."""

from __future__ import annotations

import torch

from lifelong.learner import Learner, LearnerConfig
from lifelong.models import NetworkSpec, build_model
from lifelong.strategies import build_strategy


def _learner(stream) -> Learner:
    torch.manual_seed(0)
    model = build_model(NetworkSpec("mlp", (1, 8, 8), (32,)), stream.num_classes, len(stream))
    return Learner(model, build_strategy("ewc+replay", {"memory": 100}), LearnerConfig(epochs=1, batch_size=64))


def test_start_task_and_train_step_train_as_fit_does(split_digits) -> None:
    by_fit, by_hand = _learner(split_digits), _learner(split_digits)
    by_fit.fit(split_digits, 0)
    by_fit.fit(split_digits, 1)
    by_hand.fit(split_digits, 0)  # task 0 leaves EWC's penalty and replay's memory for task 1
    loader = by_hand.start_task(split_digits, 1)
    assert by_hand.optimizer is not None and by_hand.model.training
    for batch in loader:
        by_hand.train_step(batch)
    assert by_hand.step == by_fit.step
    for a, b in zip(by_fit.model.state_dict().values(), by_hand.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
