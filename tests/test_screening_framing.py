"""Colluding keys cannot make the source-outlier screen hold whole honest keys: a source as a whole
is tested against levels never below the volume-weighted medians, which many keys sending
unsuspicious examples cannot move without the volume (issue 22: clean-label feature collisions on
Fashion-MNIST made the screen hold up to 54 % of the clean feedback). The per-(key, label) test
keeps the key-count medians, and stays frameable on the label the keys collude on (said so)."""

from __future__ import annotations

from dataclasses import replace

import torch

from lifelong.screening import ScreenConfig, source_outliers


def _feedback(seed: int = 0) -> tuple[list[str], list[str], torch.Tensor]:
    """20 honest keys, each sending 30 examples of a hard label (suspicion about 0.35 +- 0.2) and 30 of
    an easy one (about 0.2), and 20 colluding keys sending 10 unsuspicious examples (about 0.05) of the
    hard label each: as many keys, a seventh of the volume."""
    g = torch.Generator().manual_seed(seed)
    hard = (0.35 + 0.2 * torch.randn(600, generator=g)).clamp(0, 1)
    easy = (0.2 + 0.15 * torch.randn(600, generator=g)).clamp(0, 1)
    colluding = (0.05 + 0.02 * torch.randn(200, generator=g)).clamp(0, 1)
    sources = ([f"user-{i % 20:02d}" for i in range(1200)] + [f"attacker-{i % 20:02d}" for i in range(200)])
    labels = ["Sandal"] * 600 + ["Ankle boot"] * 600 + ["Sandal"] * 200
    return labels, sources, torch.cat([hard, easy, colluding])


def _whole_keys(holds) -> set[str]:
    """The sources held as a whole (the per-source verdict)."""
    return {h.reason.split("'")[1] for h in holds if ": its " in h.reason}


def test_colluding_keys_cannot_hold_whole_honest_keys():
    labels, sources, suspicion = _feedback()
    framed = source_outliers(labels, sources, suspicion, replace(ScreenConfig(), source_volume=False))
    # the median key is a colluding one: every honest key stands out against it and is held whole
    assert _whole_keys(framed) == {f"user-{i:02d}" for i in range(20)}
    held = source_outliers(labels, sources, suspicion, ScreenConfig())
    assert _whole_keys(held) == set()
    # the limit: on the label they collude on, honest senders are still compared with the median key
    assert all(labels[h.index] == "Sandal" and sources[h.index].startswith("user") for h in held)


def test_a_key_that_sends_mislabelled_examples_is_still_held_whole():
    labels, sources, suspicion = _feedback()
    # one more key sends 60 examples that every witness contradicts
    labels, sources = labels + ["Sandal"] * 60, sources + ["flipper"] * 60
    suspicion = torch.cat([suspicion, torch.full((60,), 0.9)])
    assert _whole_keys(source_outliers(labels, sources, suspicion, ScreenConfig())) == {"flipper"}
    # and so are ten flipping keys among twenty honest ones (a third of the keys and of the volume)
    g = torch.Generator().manual_seed(2)
    honest = (0.3 + 0.2 * torch.randn(600, generator=g)).clamp(0, 1)
    flips = (0.85 + 0.1 * torch.randn(300, generator=g)).clamp(0, 1)
    keys = [f"user-{i % 20:02d}" for i in range(600)] + [f"flipper-{i % 10}" for i in range(300)]
    held = source_outliers(["Sandal"] * 900, keys, torch.cat([honest, flips]), ScreenConfig())
    assert {keys[h.index] for h in held} == {f"flipper-{i}" for i in range(10)}
    assert _whole_keys(held) == {f"flipper-{i}" for i in range(10)}
