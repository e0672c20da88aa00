"""The input space of the label-collision screen for images: features that no feedback shapes.

The label-collision screen (collisions.py) compares the labels of a batch by the k nearest neighbours
of each example. For two labels the model has never learned, only the input space can compare them,
and raw pixels are a poor one: a pixel distance is dominated by where the bright pixels lie, so an
image's nearest neighbours mix what looks alike in outline. On Fashion-MNIST's targeted-sybil 30 %
(sneakers sent as "Sandal"; both labels new), the copy's edge then lies among honest sandals, and
the share of sneakers among its 20 nearest is too noisy to hold all of it (docs/poisoning.md).

Two fixed, data-free maps of an image, each of them the same whoever sends the feedback (no encoder
fit on the batch, which an attacker could shape):

- `random-conv`: 64 random zero-mean 5x5 filters, ReLU, 4x4 max pooling (Jarrett et al. 2009 and
  Saxe et al. 2011: random convolutional features with pooling are close to learned ones for
  nearest-neighbour similarity, because pooling makes them tolerant to small shifts of the strokes);
- `hog`: histograms of gradient orientations (9 bins) over a 7x7 grid of cells (Dalal and Triggs 2005):
  the edges' directions, where raw pixels see only their positions.

Inputs that are not images ([n, d], e.g. sentence embeddings) are left as they are, whatever the
option: the option names what images become.

>>> import torch
>>> input_features(torch.rand(3, 1, 28, 28), "random-conv").shape
torch.Size([3, 3136])
>>> input_features(torch.rand(3, 1, 28, 28), "hog").shape
torch.Size([3, 441])
>>> input_features(torch.rand(3, 384), "hog").shape  # not an image: unchanged
torch.Size([3, 384])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

INPUT_SPACES = ("raw", "random-conv", "hog")


def _images(x: Tensor) -> Tensor:
    """[n, C, H, W] float from [n, H, W] or [n, C, H, W]."""
    x = x.float()
    return x.unsqueeze(1) if x.dim() == 3 else x


def random_conv(x: Tensor, filters: int = 64, size: int = 5, pool: int = 4, seed: int = 0,
                batch_size: int = 2000) -> Tensor:
    """[n, filters * (H // pool) * (W // pool)]: ReLU responses of fixed random zero-mean filters (a
    filter that ignores brightness responds to edges and strokes), max-pooled over pool x pool
    regions (tolerance to small shifts), for images [n, C, H, W] or [n, H, W]."""
    x = _images(x)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(filters, x.shape[1], size, size, generator=g)
    w = w - w.mean((1, 2, 3), keepdim=True)
    pool = max(1, min(pool, x.shape[2], x.shape[3]))
    out = []
    for start in range(0, len(x), batch_size):
        h = torch.relu(F.conv2d(x[start: start + batch_size], w, padding=size // 2))
        out.append(F.max_pool2d(h, pool).flatten(1))
    return torch.cat(out) if out else x.new_zeros(0, 0)


def gradient_histograms(x: Tensor, bins: int = 9, cells: int = 7) -> Tensor:
    """[n, bins * cells * cells]: per cell of a cells x cells grid over the image (4 x 4 pixels on a
    28 x 28 image; on smaller images the cells overlap, so that an 8 x 8 digit is not reduced to four
    cells), the mean gradient magnitude by orientation (unsigned, `bins` bins over 180 degrees),
    square-rooted (so that a few strong edges do not outweigh the rest), of the images' channel mean."""
    x = _images(x).mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0]]).view(1, 1, 1, 3)
    gx = F.conv2d(x, kx, padding=(0, 1))
    gy = F.conv2d(x, kx.transpose(2, 3), padding=(1, 0))
    magnitude = (gx**2 + gy**2).sqrt()
    angle = torch.atan2(gy, gx) % math.pi
    which = (angle / math.pi * bins).long().clamp(max=bins - 1)
    hist = torch.zeros(len(x), bins, *x.shape[2:]).scatter_(1, which, magnitude)
    return F.adaptive_avg_pool2d(hist, cells).flatten(1).sqrt()


def input_features(x: Tensor, kind: str = "raw", seed: int = 0) -> Tensor:
    """The rows the label-collision screen compares in its input space: images ([n, H, W] or
    [n, C, H, W]) mapped by `kind` ("raw": the pixels; "random-conv"; "hog"), other inputs flattened."""
    if kind not in INPUT_SPACES:
        raise ValueError(f"unknown input space {kind!r}; use one of {INPUT_SPACES}")
    if kind == "raw" or x.dim() < 3:
        return x.flatten(1).float()
    if kind == "random-conv":
        return random_conv(x, seed=seed)
    return gradient_histograms(x)
