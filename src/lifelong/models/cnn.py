"""A small convolutional network for 28x28 (or 8x8) single-channel images."""

from __future__ import annotations

from torch import nn

from lifelong.models.mlp import LayerStack


class CNN(LayerStack):
    """conv(32) -> pool -> conv(64) -> pool -> fc(hidden) -> fc(out)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, out_features: int = 10, hidden: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        side = image_size // 4
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, out_features))
