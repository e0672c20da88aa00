"""Your own network as the body of a continual classifier.

A backbone maps one batch of inputs to one feature vector per sample ([N, F]; other shapes are
flattened); lifelong puts the output layer on top (`BackboneClassifier.head`, one row per class), and
`ContinualClassifier` grows and masks it. Three sources, `--network`:

- ``module:function``: a factory of yours, called with the `--network-option` keyword arguments, that
  returns an `nn.Module` (the module must be importable: on PYTHONPATH or in the working directory);
- ``torchvision:NAME``: a torchvision architecture built from scratch (its classifier layer removed),
  optionally with a local state dict (`--network-weights FILE`);
- ``hf:FOLDER``: a local Hugging Face model folder (local files only); its tokenizer, from the same
  folder, turns text into token ids. A base model (`AutoModel`) gives its token states mean-pooled over
  real tokens; a sequence classifier (its config's architecture ``...ForSequenceClassification``,
  `AutoModelForSequenceClassification`) gives what its output layer read (BERT's pooled [CLS] state,
  RoBERTa's classification head's dense layer, ...): that layer is removed, as torchvision's is, since
  its rows are the folder's labels; lifelong's growing head takes its place and learns the stream's.

A saved model stores the reference, never code: loading a ``module:function`` network imports and
runs that function again, so it needs ``trust_code=True`` (``lifelong serve --trust-code``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class NetworkError(ValueError):
    """A `--network` reference that cannot be resolved or does not build a module."""


class BackboneClassifier(nn.Module):
    """A backbone's features, then one Linear output layer over every class."""

    def __init__(self, backbone: nn.Module, features: int, num_classes: int):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resolve(reference: str) -> Callable[..., Any]:
    """``module:function`` -> the function (the working directory is searched last)."""
    module_name, sep, attr = reference.partition(":")
    if not (sep and module_name and attr):
        raise NetworkError(f"--network takes module:function, torchvision:NAME or hf:FOLDER, not {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NetworkError(f"--network {reference}: cannot import module {module_name!r} ({exc}); put it on "
                           "PYTHONPATH or in the working directory") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise NetworkError(f"--network {reference}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise NetworkError(f"--network {reference}: {attr!r} is not callable")
    return target


def call_factory(reference: str, options: dict[str, Any]) -> nn.Module:
    """The backbone a ``module:function`` factory returns, checked to be an `nn.Module`."""
    factory = resolve(reference)
    try:
        net = factory(**options)
    except TypeError as exc:
        raise NetworkError(f"--network {reference}: calling it with {options} failed ({exc})") from None
    if not isinstance(net, nn.Module):
        raise NetworkError(f"--network {reference} returned {type(net).__name__}, not a torch.nn.Module")
    return net


class HFEncoder(nn.Module):
    """A Hugging Face model's last hidden states, mean-pooled over the tokens that are not padding."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != self.pad_id
        try:  # outside vmap, drop the trailing columns that are padding in every sample (much faster on CPU)
            longest = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
            ids, mask = ids[:, :longest], mask[:, :longest]
        except RuntimeError:
            pass
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


class HFClassifierBody(nn.Module):
    """A Hugging Face sequence classifier whose output layer is an identity: its "logits" are the
    features that layer read."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != self.pad_id
        try:  # as HFEncoder: drop the trailing columns that are padding in every sample
            longest = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
            ids, mask = ids[:, :longest], mask[:, :longest]
        except RuntimeError:
            pass
        return self.model(input_ids=ids, attention_mask=mask.long()).logits


def is_sequence_classifier(config: Any) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or [])


def _drop_output_layer(model: nn.Module, num_labels: int) -> int:
    """Replace a sequence classifier's output layer (its last Linear with one row per label) by an
    identity; the size of what it read."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise NetworkError(f"no output layer of {num_labels} labels found in {type(model).__name__}")
    name, layer = found[-1]
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
    return int(layer.in_features)


def hf_backbone(folder: str, pretrained: bool = True) -> tuple[nn.Module, int]:
    """A local Hugging Face folder's model (its weights, or only its config when the weights come from
    a saved lifelong model) and its feature size."""
    if not (Path(folder) / "config.json").is_file():
        raise NetworkError(f"--network hf:{folder}: no Hugging Face model folder there (config.json is missing)")
    try:
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

        from lifelong.encoders import quiet_transformers
    except ImportError:
        raise NetworkError("--network hf:FOLDER needs transformers: pip install 'lifelong[text]'") from None
    with quiet_transformers():
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        auto: Any = AutoModelForSequenceClassification if is_sequence_classifier(config) else AutoModel
        model = auto.from_pretrained(folder, local_files_only=True) if pretrained else auto.from_config(config)
    pad_id = int(getattr(config, "pad_token_id", None) or 0)
    if auto is AutoModel:
        return HFEncoder(model, pad_id), int(config.hidden_size)
    features = _drop_output_layer(model, int(config.num_labels))
    return HFClassifierBody(model, pad_id), features


def torchvision_backbone(name: str, weights: str = "") -> nn.Module:
    """A torchvision architecture from scratch (or a local state dict) without its classifier layer."""
    try:
        from torchvision import models
    except ImportError:
        raise NetworkError(f"--network torchvision:{name} needs torchvision, which is not installed: "
                           "pip install torchvision (the build matching your torch)") from None
    if name not in models.list_models():
        raise NetworkError(f"torchvision has no architecture {name!r}; see torchvision.models.list_models()")
    net: nn.Module = models.get_model(name, weights=None)
    if weights:
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError) as exc:
            raise NetworkError(f"--network-weights {weights}: cannot load it into {name} ({exc})") from None
    for attr in ("fc", "classifier", "head", "heads"):  # the last layer: lifelong's own head replaces it
        if hasattr(net, attr):
            setattr(net, attr, nn.Identity())
            break
    return net


def feature_size(backbone: nn.Module, in_shape: tuple[int, ...], tokens: bool) -> int:
    """F of a backbone's [N, F] output, from one forward pass on two placeholder samples."""
    x = torch.ones(2, *in_shape, dtype=torch.long) if tokens else torch.zeros(2, *in_shape)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(x)
    except Exception as exc:
        raise NetworkError(f"the network does not take this data's inputs (2 samples of shape {list(in_shape)}): "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, Tensor) or out.dim() < 2 or out.shape[0] != 2:
        raise NetworkError("the network must return one tensor of features per sample ([N, F]), not "
                           f"{type(out).__name__} {list(getattr(out, 'shape', []))}")
    return int(out[0].numel())


def check_network(reference: str, options: dict[str, Any], weights: str = "") -> None:
    """Tell a bad `--network` before anything runs or is written: the folder, the architecture, or the
    factory (imported and called once, its result checked to be a module)."""
    prefix, _, rest = reference.partition(":")
    if prefix == "hf":
        if not (Path(rest) / "config.json").is_file():
            raise NetworkError(f"--network {reference}: no Hugging Face model folder there (config.json is missing)")
    elif prefix == "torchvision":
        if weights and not Path(weights).is_file():
            raise NetworkError(f"--network-weights {weights}: no such file")
        torchvision_backbone(rest)
    else:
        call_factory(reference, options)
