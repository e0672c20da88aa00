"""The label-collision screen's two propagation options. Where the copies outnumber the honest examples
they copy, the first round leaves part of the copy under the posterior threshold: g(x), a count of 20
neighbours, is noisy (`collision_smooth` averages it over an example's nearest rows of its own label),
and the copy's edge is not a copy of the copied label as a whole, so the later rounds' share estimate
collapses (`collision_grow` holds, in the later rounds, what has most of its neighbours in the copied
label or the copy held so far, up to the copy's size estimated in the first round). Each holds more of
the copy than the first round alone, and no honest example more (Fashion-MNIST targeted-sybil at
30 %, report seed 0: docs/poisoning.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from collision_util import synthetic_flip

from lifelong.screening import ScreenConfig, label_collisions


def _held(x: torch.Tensor, labels: list[str], **options: Any) -> torch.Tensor:
    held = torch.zeros(len(labels), dtype=torch.bool)
    config = replace(ScreenConfig(), **{"collision_grow": 0.0, **options})
    held[[h.index for h in label_collisions(x, labels, config=config, space="input")]] = True
    return held


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smoothing_and_growing_hold_more_of_a_copy_that_outnumbers_what_it_copies(seed):
    x, labels, poison = synthetic_flip(seed)
    plain = _held(x, labels)
    smooth = _held(x, labels, collision_smooth=20)
    grown = _held(x, labels, collision_smooth=20, collision_grow=0.6)
    # measured over seeds 0-4: the first round alone holds 144-192 of the 250 copies, smoothed 188-237
    # (at least 24 more), grown from there 225-245 (the budget, the copy's size estimated in the first
    # round, stops it at 225 on four seeds); honest examples held: none. Bounds leave room
    assert int((smooth & poison).sum()) >= int((plain & poison).sum()) + 12
    assert int((grown & poison).sum()) >= max(215, int((smooth & poison).sum()))
    assert int((plain & ~poison).sum()) <= 2 and int((smooth & ~poison).sum()) <= 2
    assert int((grown & ~poison).sum()) <= 3


@pytest.mark.parametrize("seed", [0, 1])
def test_honest_look_alike_labels_stay_untouched(seed):
    # two honest labels that overlap both ways: no collision, so nothing to smooth or grow from
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(10)
    shift[0] = 0.8
    x = torch.cat([torch.randn(300, 10, generator=g) + shift, torch.randn(300, 10, generator=g) - shift])
    labels = ["a"] * 300 + ["b"] * 300
    assert not _held(x, labels, collision_smooth=20, collision_grow=0.5).any()


def test_options_are_checked():
    with pytest.raises(ValueError, match="collision_grow"):
        ScreenConfig(collision_grow=1.5)
    with pytest.raises(ValueError, match="collision_smooth"):
        ScreenConfig(collision_smooth=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repeated_growing_steps_take_a_clump_of_missed_copies_from_its_held_side(seed):
    x, labels, poison = synthetic_flip(seed)
    once = _held(x, labels, collision_grow=0.8, collision_grow_steps=1)
    repeated = _held(x, labels, collision_grow=0.8, collision_grow_steps=10)
    # measured over seeds 0-4: one step holds 148-213 of the 250 copies, ten steps 152-245 (4 to 43
    # more), neither an honest example; bounds leave room
    assert int((repeated & poison).sum()) >= int((once & poison).sum()) + 2
    assert int((repeated & ~poison).sum()) <= 2
    assert not (once & ~repeated).any()


def test_growing_steps_are_checked():
    with pytest.raises(ValueError, match="collision_grow_steps"):
        ScreenConfig(collision_grow_steps=0)
