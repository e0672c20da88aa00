"""One model factory: a stream's input and a model config -> a full network spec -> the model.

`network_spec` decides what network a stream needs (an MLP or CNN for arrays, the MiniLM text
classifier for token ids, a per-task-input policy for control tasks) and writes down everything that
shapes it; `build_model` builds a `ContinualClassifier` from that spec alone. A run builds its model
this way and a saved model stores the spec, so loading builds the same network without looking at
the weights' shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lifelong.config import Config
from lifelong.data.task import InputSpec, TaskStream
from lifelong.models.cnn import CNN
from lifelong.models.heads import ContinualClassifier
from lifelong.models.mlp import MLP

MODEL_KINDS = ("mlp", "cnn")


@dataclass
class ModelConfig(Config):
    """What a user chooses for array inputs: the family and its widths (text and control streams have a
    network of their own; `hidden` then sizes the control policy's trunk)."""

    kind: str = "mlp"  # "mlp" or "cnn"
    hidden: tuple[int, ...] = (400, 400)  # mlp: hidden widths; cnn: the width of its one hidden fc layer
    dropout: float = 0.0
    # your own network instead (lifelong.models.backbone): "module:function", "torchvision:NAME" or "hf:FOLDER"
    network: str = ""
    network_options: dict[str, Any] = field(default_factory=dict)  # module:function: its keyword arguments
    network_weights: str = ""  # torchvision: a local state dict to start from

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, not {self.kind!r}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive integers, not {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.network and ":" not in self.network:
            raise ValueError(f"--network takes module:function, torchvision:NAME or hf:FOLDER, not {self.network!r}")


NETWORK_KINDS = ("mlp", "cnn", "text", "task-input-mlp", "factory", "torchvision", "hf")


@dataclass
class NetworkSpec(Config):
    """Everything that shapes a network but its output size and task count (those come from the
    labels and tasks it has learned, and grow with them)."""

    kind: str  # one of NETWORK_KINDS
    in_shape: tuple[int, ...] = ()  # one sample's input shape
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    encoder: str = ""  # text: "finetune" or "lora"
    lora_rank: int = 8
    # a backbone of the user's: factory "module:function", torchvision architecture name, hf folder
    source: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # factory: its keyword arguments
    weights: str = ""  # torchvision: the local state dict the run started from (provenance only)
    features: int = 0  # the backbone's feature size (0: measured when first built)

    def __post_init__(self) -> None:
        if self.kind not in NETWORK_KINDS:
            raise ValueError(f"network kind must be one of {NETWORK_KINDS}, not {self.kind!r}")


def network_spec(stream: TaskStream, model: ModelConfig | None = None) -> NetworkSpec:
    """The network a stream's input needs, sized by `model` where the choice is the user's."""
    model = model or ModelConfig()
    spec: InputSpec = stream.input_spec
    if model.network:
        return _custom_spec(model, spec)
    if spec.kind == "text" and spec.encoder in ("finetune", "lora"):
        return NetworkSpec("text", spec.shape, encoder=spec.encoder)
    if spec.kind == "control" and stream.scenario == "task":
        return NetworkSpec("task-input-mlp", spec.shape, model.hidden)
    if model.kind == "cnn":
        if len(spec.shape) != 3:
            raise ValueError(f"a cnn needs image inputs [C, H, W] per sample; this stream gives {spec.shape}")
        return NetworkSpec("cnn", spec.shape, model.hidden[:1], model.dropout)
    return NetworkSpec("mlp", spec.shape, model.hidden, model.dropout)


def _custom_spec(model: ModelConfig, spec: InputSpec) -> NetworkSpec:
    from lifelong.models.backbone import NetworkError

    prefix, _, rest = model.network.partition(":")
    if prefix == "hf":
        if spec.kind != "text" or spec.encoder != model.network:
            raise NetworkError(f"--network {model.network} takes text tokenised by its own folder "
                               f"(--encoder {model.network}); this stream gives {spec.kind} inputs")
        return NetworkSpec("hf", spec.shape, source=rest)
    if prefix == "torchvision":
        return NetworkSpec("torchvision", spec.shape, source=rest, weights=model.network_weights)
    return NetworkSpec("factory", spec.shape, source=model.network, options=dict(model.network_options),
                       encoder=spec.encoder if spec.kind == "text" else "")


def _backbone(spec: NetworkSpec, pretrained: bool) -> nn.Module:
    """The user's backbone of a spec; `spec.features` is measured on it the first time."""
    from lifelong.models import backbone as bb

    if spec.kind == "hf":
        net, spec.features = bb.hf_backbone(spec.source, pretrained)
        return net
    if spec.kind == "torchvision":
        net = bb.torchvision_backbone(spec.source, spec.weights if pretrained else "")
    else:
        net = bb.call_factory(spec.source, spec.options)
    if not spec.features:
        spec.features = bb.feature_size(net, spec.in_shape, tokens=spec.encoder not in ("", "frozen"))
    return net


def build_network(spec: NetworkSpec, num_classes: int, num_tasks: int = 1, pretrained: bool = True) -> nn.Module:
    """The bare network of a spec (logits over `num_classes`). `pretrained=False`: a user's backbone
    without its starting weights (a saved model's weights replace them)."""
    if spec.kind in ("factory", "torchvision", "hf"):
        from lifelong.models.backbone import BackboneClassifier

        net = _backbone(spec, pretrained)
        return BackboneClassifier(net, spec.features, num_classes)
    if spec.kind == "mlp":
        return MLP(math.prod(spec.in_shape), spec.hidden, num_classes, spec.dropout)
    if spec.kind == "cnn":
        return CNN(spec.in_shape[0], spec.in_shape[-1], num_classes, spec.hidden[0], spec.dropout)
    if spec.kind == "text":
        from lifelong.models.text import build_text_model

        return build_text_model(spec.encoder, num_classes, spec.lora_rank)
    from lifelong.models.control import TaskInputMLP

    return TaskInputMLP(num_tasks, math.prod(spec.in_shape), spec.hidden, num_classes)


def build_model(spec: NetworkSpec, num_classes: int, num_tasks: int, pretrained: bool = True) -> ContinualClassifier:
    """A `ContinualClassifier` around the spec's network: what a run trains and a saved model loads."""
    return ContinualClassifier(build_network(spec, num_classes, num_tasks, pretrained), num_tasks, num_classes)


def model_for(stream: TaskStream, model: ModelConfig | None = None) -> tuple[ContinualClassifier, NetworkSpec]:
    """The model for a stream and the spec it was built from."""
    spec = network_spec(stream, model)
    return build_model(spec, stream.num_classes, max(1, len(stream))), spec
