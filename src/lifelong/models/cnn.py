"""A small convolutional network for 28x28 (or 8x8) single-channel images."""

from __future__ import annotations

from torch import Tensor, nn


class CNN(nn.Module):
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

    @property
    def head(self) -> nn.Linear:
        return self.layers[-1]  # type: ignore[return-value]

    def features(self, x: Tensor) -> Tensor:
        return self.layers[:-1](x)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
