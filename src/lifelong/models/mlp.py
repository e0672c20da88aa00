"""A multilayer perceptron over flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class LayerStack(nn.Module):
    """A network that is one `nn.Sequential` ending in its Linear output layer (MLP, CNN)."""

    layers: nn.Sequential

    @property
    def head(self) -> nn.Linear:
        """The output layer (one row per class)."""
        return self.layers[-1]  # type: ignore[return-value]

    def features(self, x: Tensor) -> Tensor:
        """The representation the output layer reads (the last hidden layer)."""
        return self.layers[:-1](x)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MLP(LayerStack):
    """in -> [Linear -> ReLU -> Dropout] * len(hidden) -> Linear(out)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (400, 400), out_features: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)
