"""Colluding keys cannot frame honest ones for the source-outlier screen: the typical source is
never below the mean (and the pooled spread) over the examples, which many keys sending
unsuspicious examples cannot move without the volume (issue 22: clean-label feature collisions on
Fashion-MNIST made the screen hold up to 54 % of the clean feedback)."""

from __future__ import annotations

from dataclasses import replace

import torch

from lifelong.screening import ScreenConfig, source_outliers


def _feedback(seed: int = 0) -> tuple[list[str], list[str], torch.Tensor]:
    """20 honest keys sending 30 examples of a hard new label (suspicion about 0.3 +- 0.2) and 20
    colluding keys sending 10 unsuspicious ones each (about 0.05): as many keys, a quarter of the volume."""
    g = torch.Generator().manual_seed(seed)
    honest = (0.3 + 0.2 * torch.randn(600, generator=g)).clamp(0, 1)
    colluding = (0.05 + 0.02 * torch.randn(200, generator=g)).clamp(0, 1)
    sources = [f"user-{i % 20:02d}" for i in range(600)] + [f"attacker-{i % 20:02d}" for i in range(200)]
    # two honest keys are noisier labellers than the rest, within what honest feedback shows
    honest[[i for i in range(600) if i % 20 in (3, 7)]] += 0.08
    return ["Sandal"] * 800, sources, torch.cat([honest, colluding]).clamp(0, 1)


def _held_sources(holds, sources) -> set[str]:
    return {sources[h.index] for h in holds}


def test_colluding_keys_frame_honest_ones_without_the_volume_floor():
    labels, sources, suspicion = _feedback()
    off = replace(ScreenConfig(), source_volume=False)
    framed = _held_sources(source_outliers(labels, sources, suspicion, off), sources)
    # the median key is a colluding one: honest keys stand out against it, the noisier ones first
    assert {"user-03", "user-07"} <= framed
    assert not any(s.startswith("attacker") for s in framed)
    # with the floor (the default), the typical level is the examples' mean: no honest key is held
    assert source_outliers(labels, sources, suspicion, ScreenConfig()) == []


def test_the_floor_still_holds_a_key_that_sends_mislabelled_examples():
    labels, sources, suspicion = _feedback()
    # one more key sends 30 examples that every witness contradicts
    labels, sources = labels + ["Sandal"] * 30, sources + ["flipper"] * 30
    suspicion = torch.cat([suspicion, torch.full((30,), 0.9)])
    assert _held_sources(source_outliers(labels, sources, suspicion, ScreenConfig()), sources) == {"flipper"}
    # and so do ten flipping keys among twenty honest ones (a third of the keys, 1/3 of the volume)
    g = torch.Generator().manual_seed(2)
    honest = (0.3 + 0.2 * torch.randn(600, generator=g)).clamp(0, 1)
    flips = (0.85 + 0.1 * torch.randn(300, generator=g)).clamp(0, 1)
    keys = [f"user-{i % 20:02d}" for i in range(600)] + [f"flipper-{i % 10}" for i in range(300)]
    held = _held_sources(source_outliers(["Sandal"] * 900, keys, torch.cat([honest, flips]), ScreenConfig()), keys)
    assert held == {f"flipper-{i}" for i in range(10)}
