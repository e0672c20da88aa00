"""What images become in the label-collision screen's input space (`ScreenConfig.collision_input`,
lifelong/screening/representation.py). Raw pixels compare where the bright pixels lie, so the same
shape shifted by two pixels is far from itself; a flip of such images leaves no copy the screen can
see. Gradient histograms over cells compare the edges' directions, and see it."""

from __future__ import annotations

import pytest
import torch
from collision_util import synthetic_flip

from lifelong.screening import ScreenConfig, screen
from lifelong.screening.representation import gradient_histograms, input_features, random_conv

ONLY_COLLISIONS = {"source_limits": False, "label_noise": False, "source_outliers": False, "backdoor": False,
                   "guard_agreement": False, "collision_spaces": ("input",)}


def _glyphs(g: torch.Generator, n: int, glyph: torch.Tensor, size: int = 16, shift: int = 2) -> torch.Tensor:
    """n images [n, 1, size, size]: faint noise and `glyph` placed at the centre, shifted by up to
    `shift` pixels each way."""
    x = torch.rand(n, 1, size, size, generator=g) * 0.1
    h, c0 = glyph.shape[0], (size - glyph.shape[0]) // 2
    for i in range(n):
        dr, dc = torch.randint(-shift, shift + 1, (2,), generator=g).tolist()
        x[i, 0, c0 + dr: c0 + dr + h, c0 + dc: c0 + dc + h] += glyph
    return x


def shifted_flip(seed: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """150 images of glyph "a", 150 of glyph "b", and 100 more of "a" labelled "b" (inputs, labels,
    which are poison)."""
    g = torch.Generator().manual_seed(seed)
    glyph_a = (torch.rand(6, 6, generator=torch.Generator().manual_seed(99)) > 0.5).float()
    glyph_b = (torch.rand(6, 6, generator=torch.Generator().manual_seed(98)) > 0.5).float()
    x = torch.cat([_glyphs(g, 150, glyph_a), _glyphs(g, 150, glyph_b), _glyphs(g, 100, glyph_a)])
    return x, ["a"] * 150 + ["b"] * 250, torch.tensor([False] * 300 + [True] * 100)


def _held(x: torch.Tensor, labels: list[str], kind: str) -> torch.Tensor:
    config = ScreenConfig(collision_input=kind, **ONLY_COLLISIONS)
    result = screen(x.flatten(1), labels, config=config, inputs=x)
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[[h.index for h in result.holds]] = True
    return held


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_histograms_see_a_flip_of_shifted_images_that_raw_pixels_miss(seed):
    x, labels, poison = shifted_flip(seed)
    raw, hog = _held(x, labels, "raw"), _held(x, labels, "hog")
    # measured over seeds 0-4: raw pixels hold nothing, gradient histograms 64-87 of the 100 copies and
    # 0-2 of the 300 honest images; the bounds leave room
    assert int(raw.sum()) == 0
    assert int((hog & poison).sum()) >= 45 and int((hog & ~poison).sum()) <= 5


def test_inputs_that_are_not_images_are_compared_as_they_are():
    x, labels, _ = synthetic_flip(0)
    assert torch.equal(input_features(x, "hog"), x) and torch.equal(input_features(x, "random-conv"), x)
    assert torch.equal(_held(x, labels, "raw"), _held(x, labels, "hog"))


def test_the_maps_are_fixed_and_take_any_number_of_channels():
    x = torch.rand(5, 3, 12, 12)
    assert torch.equal(random_conv(x), random_conv(x))  # the filters come from a fixed seed, not the data
    assert random_conv(x).shape == (5, 64 * 3 * 3)
    assert gradient_histograms(x).shape == (5, 9 * 7 * 7)
    assert torch.equal(input_features(x[:, :1], "hog"), input_features(x[:, 0], "hog"))  # [n, H, W] too


def test_unknown_input_space_is_a_clear_error():
    with pytest.raises(ValueError, match="collision_input"):
        ScreenConfig(collision_input="pca")
    with pytest.raises(ValueError, match="input space"):
        input_features(torch.rand(2, 1, 8, 8), "pca")
