"""The label-collision screen's neighbour share g(x) with a smooth estimate beside the k-NN count
(`collision_estimator="knn+logistic"`): where the copies outnumber the honest examples they copy, a
count of 20 neighbours is noisy enough to leave part of the copy's core under the posterior
threshold (Fashion-MNIST targeted-sybil at 30 %, seed 0: 230 of 600 flipped sneakers kept); the
mean with a cross-fitted logistic estimate holds more of the copy, and no honest example more."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from collision_util import synthetic_flip

from lifelong.screening import ScreenConfig, label_collisions


def _held(x: torch.Tensor, labels: list[str], estimator: str) -> torch.Tensor:
    held = torch.zeros(len(labels), dtype=torch.bool)
    config = replace(ScreenConfig(), collision_estimator=estimator)
    held[[h.index for h in label_collisions(x, labels, config=config, space="input")]] = True
    return held


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_smooth_estimate_holds_more_of_a_copy_that_outnumbers_what_it_copies(seed):
    x, labels, poison = synthetic_flip(seed)
    knn, both = _held(x, labels, "knn"), _held(x, labels, "knn+logistic")
    # measured over seeds 0-4: the k-NN count holds 144-192 of the 250 copies, the mean 173-209, at
    # least 17 more on every seed, and neither holds an honest example; the bounds leave room
    assert int((both & poison).sum()) >= int((knn & poison).sum()) + 8
    assert int((both & ~poison).sum()) <= 2 and int((knn & ~poison).sum()) <= 2


def test_unknown_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="collision_estimator"):
        ScreenConfig(collision_estimator="forest")


def test_a_held_group_of_near_duplicates_never_holds_its_trusted_members():
    x, labels, _ = synthetic_flip(0)
    copied = x[350:355]  # five of the flipped inputs are also in the trusted reference, labelled "b"
    for estimator in ("knn", "knn+logistic"):
        config = replace(ScreenConfig(), collision_estimator=estimator)
        holds = label_collisions(x, labels, (copied.clone(), ["b"] * 5), config=config, space="input")
        assert holds and all(h.index < len(labels) for h in holds)
