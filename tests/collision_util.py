"""Helper of the label-collision tests: a synthetic flip where the copies outnumber what they copy."""

from __future__ import annotations

import torch


def synthetic_flip(seed: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """150 honest examples of "a", 200 of "b", and 250 more inputs of "a" labelled "b" (inputs, labels,
    which are poison)."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(10)
    shift[0] = 2.5
    x = torch.cat([torch.randn(150, 10, generator=g) + shift, torch.randn(200, 10, generator=g) - shift,
                   torch.randn(250, 10, generator=g) + shift])
    return x, ["a"] * 150 + ["b"] * 450, torch.tensor([False] * 350 + [True] * 250)
