"""Self-describing saved models: one directory that holds everything needed to serve and keep learning.

A saved model directory holds

- ``weights.safetensors``: the network's weights;
- ``strategy.pt``: the strategy's state (importances, anchors, replay memory), read back with
  ``torch.load(weights_only=True)`` so loading never runs pickled code;
- ``guards.safetensors``: per learned task, a small held-out evaluation set (the "guard set" every
  later update is checked on);
- ``config.json``: the kind of input (``array`` with its shape, ``text`` through the frozen MiniLM
  encoder, ``tokens`` for a fine-tuned encoder, ``control`` observations), the network's spec (what
  `lifelong.models.build_model` builds it from), label names, tasks learned, the strategy and its
  options, the training settings, provenance, the format version and the library version;
- any extra JSON files the caller adds (a service keeps its update report there);
- ``manifest.json``, written last: the format version and the sha256 of every other file.

`save_model` writes into a temporary directory beside the target and renames it into place
(`lifelong.atomic.replace_directory`), so a reader sees either no model or a whole one. `load_model`
checks the format version and every file's hash and says exactly what is missing or corrupt.

>>> import tempfile, torch
>>> from lifelong.data import load_digits, split
>>> from lifelong.learner import Learner, LearnerConfig
>>> from lifelong.models import ModelConfig, model_for
>>> from lifelong.strategies import build_strategy
>>> stream = split(*load_digits(), num_tasks=5, scenario="class")
>>> torch.manual_seed(0) and None
>>> model, network = model_for(stream, ModelConfig(hidden=(32,)))
>>> learner = Learner(model, build_strategy("ewc+replay", {"memory": 100}), LearnerConfig(epochs=2))
>>> learner.fit(stream, 0)["task"]
0
>>> path = save_run(tempfile.mkdtemp() + "/digits", stream[:1], model, learner.strategy, network)
>>> saved = load_model(path)
>>> saved.spec.input, saved.spec.labels[:3], [t["classes"] for t in saved.spec.tasks]
({'kind': 'array', 'shape': [1, 8, 8]}, ['0', '1', '2'], [[0, 1]])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lifelong import atomic
from lifelong.config import Config
from lifelong.data.task import ArrayDataset, Task, TaskStream, fetch
from lifelong.devices import to_device
from lifelong.models import ContinualClassifier, NetworkSpec, build_model
from lifelong.strategies import build_strategy
from lifelong.strategies.base import Strategy

FORMAT = "lifelong-model"
FORMAT_VERSION = 2  # 2: the network is its NetworkSpec (1: a shape read back from the module)
WEIGHTS, STRATEGY, GUARDS, CONFIG, MANIFEST = ("weights.safetensors", "strategy.pt", "guards.safetensors",
                                               "config.json", "manifest.json")
REQUIRED = (CONFIG, WEIGHTS, STRATEGY, GUARDS)


class CheckpointError(ValueError):
    """A saved model directory that is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class ModelSpec(Config):
    """What a saved model is: enough to rebuild the network, read its inputs and name its outputs.

    `input`: ``{"kind": "array", "shape": [...]}`` (one sample's shape; ``"pixels": true`` for bytes the
    model sees divided by 255), ``{"kind": "image", "shape": [C, H, W], "resize": ...}`` (PNG or JPEG
    pictures), ``{"kind": "text", "encoder": ..., "features": 384}`` (sentences through the frozen
    encoder), ``{"kind": "tokens", "encoder": ..., "max_tokens": ...}`` or ``{"kind": "control", "shape":
    [...]}``. `network`: the `NetworkSpec` the
    model was built from. `tasks`: one ``{"id", "name", "classes"}`` per learned task, in order.
    `history`: free-form provenance (the parent version, the feedback an update learned from)."""

    input: dict[str, Any]
    network: NetworkSpec
    scenario: str
    labels: list[str]
    tasks: list[dict[str, Any]]
    strategy: str
    strategy_options: dict[str, Any] = field(default_factory=dict)
    learner: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        import lifelong

        return {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": lifelong.__version__,
                **super().to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        missing = [k for k in ("input", "network", "scenario", "labels", "tasks", "strategy") if k not in values]
        if missing:
            raise CheckpointError(f"{CONFIG} lacks the field(s) {missing}")
        d = {k: v for k, v in values.items() if k not in ("format", "format_version", "library_version")}
        if values.get("format_version", FORMAT_VERSION) == 1:
            d["network"] = _network_v1(d["network"])
        try:
            return super().from_dict(d)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{CONFIG} is not a model spec this version reads ({exc})") from exc

    def build(self, trust_code: bool = False) -> ContinualClassifier:
        """A fresh model of this spec, sized for its labels and tasks (weights to be loaded into it).
        A network built by a ``module:function`` factory runs that code: only with `trust_code`."""
        if self.network.kind == "factory" and not trust_code:
            raise CheckpointError(f"this model's network is built by running the code {self.network.source!r}; "
                                  "load it only if you trust that code: trust_code=True (lifelong serve --trust-code)")
        return build_model(self.network, self.num_classes, max(1, len(self.tasks)), pretrained=False)

    def stream(self, guards: Sequence[tuple[Tensor, Tensor]]) -> TaskStream:
        """The learned tasks as a stream whose test sets are the guard sets (and nothing to train on)."""
        if len(guards) != len(self.tasks):
            raise CheckpointError(f"{len(self.tasks)} tasks but {len(guards)} guard sets")
        tasks = []
        for info, (x, y) in zip(self.tasks, guards, strict=True):
            empty = ArrayDataset(x[:0], y[:0])
            tasks.append(Task(int(info["id"]), empty, ArrayDataset(x, y), tuple(info["classes"]), info.get("name", "")))
        return TaskStream(tasks, self.num_classes, self.scenario, "guards", list(self.labels))


@dataclass
class SavedModel:
    """A loaded model directory: the model (its class mask set for every learned task), its strategy
    with its state, the spec, the guard sets and where it was read from."""

    model: ContinualClassifier
    strategy: Strategy
    spec: ModelSpec
    guards: list[tuple[Tensor, Tensor]]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def guard_stream(self) -> TaskStream:
        return self.spec.stream(self.guards)


def _network_v1(network: dict[str, Any]) -> dict[str, Any]:
    """A format-1 network description (MLP or CNN shapes) as a NetworkSpec dict."""
    if network.get("kind") == "mlp":
        return {"kind": "mlp", "in_shape": [int(network["in_features"])], "hidden": network["hidden"],
                "dropout": network.get("dropout", 0.0)}
    if network.get("kind") == "cnn":
        side = int(network["image_size"])
        return {"kind": "cnn", "in_shape": [int(network["in_channels"]), side, side], "hidden": [network["hidden"]],
                "dropout": network.get("dropout", 0.0)}
    raise CheckpointError(f"unknown network kind {network.get('kind')!r} in {CONFIG}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def save_model(path: str | os.PathLike, model: ContinualClassifier, strategy: Strategy, spec: ModelSpec,
               guards: Sequence[tuple[Tensor, Tensor]], extra: dict[str, Any] | None = None,
               overwrite: bool = False) -> Path:
    """Write a model directory at `path` atomically (a temporary directory, then a rename).

    `extra` maps file names (``report.json``) to JSON-serialisable objects saved beside the model
    and covered by the manifest. An existing `path` is an error unless `overwrite` is set and it is a
    saved model itself (then it is replaced)."""
    from safetensors.torch import save_file

    final = Path(path)
    if len(guards) != len(spec.tasks):
        raise CheckpointError(f"{len(spec.tasks)} tasks but {len(guards)} guard sets")
    if final.exists() and not (overwrite and (final / MANIFEST).exists()):
        raise CheckpointError(f"{final} already exists" + ("" if overwrite else "; choose another path")
                              + (" and is not a saved model, so it is not replaced" if overwrite else ""))
    for name in extra or {}:
        if name in (*REQUIRED, MANIFEST) or Path(name).name != name or not name.endswith(".json"):
            raise CheckpointError(f"extra file name {name!r} must be a plain new *.json name")

    def fill(tmp: Path) -> None:
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / WEIGHTS))
        torch.save(to_device(strategy.state_dict(), "cpu"), tmp / STRATEGY)  # CPU tensors, loadable anywhere
        tensors: dict[str, Tensor] = {}
        for i, (x, y) in enumerate(guards):
            tensors[f"task.{i}.x"], tensors[f"task.{i}.y"] = x.contiguous().clone(), y.long().contiguous().clone()
        save_file(tensors, str(tmp / GUARDS))
        _write_json(tmp / CONFIG, spec.to_dict())
        for name, obj in (extra or {}).items():
            _write_json(tmp / name, obj)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            atomic.fsync_path(tmp / name)  # hashed as they will be read back
        _write_json(tmp / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                     "files": {name: _sha256(tmp / name) for name in files}})

    atomic.replace_directory(final, fill, overwrite=overwrite)
    return final


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Check a model directory's manifest, format version and every file's hash; return the manifest."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory holding a saved model")
    if not (root / MANIFEST).exists():
        raise CheckpointError(f"{root} is not a saved lifelong model: {MANIFEST} is missing "
                              "(an interrupted save leaves no manifest; save it again)")
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        version, files = manifest["format_version"], dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{root / MANIFEST} is corrupt ({exc})") from exc
    if manifest.get("format") != FORMAT or not isinstance(version, int):
        raise CheckpointError(f"{root / MANIFEST} is not a {FORMAT} manifest")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{root} has format version {version}; this lifelong reads up to version "
                              f"{FORMAT_VERSION}: upgrade lifelong")
    missing = [f for f in REQUIRED if f not in files]
    if missing:
        raise CheckpointError(f"{root}: the manifest does not list {missing}")
    for name, digest in files.items():
        file = root / name
        if not file.exists():
            raise CheckpointError(f"{root}: file {name} is missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"{root}: file {name} is corrupt (its sha256 does not match the manifest)")
    return manifest


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", trust_code: bool = False) -> SavedModel:
    """Read a model directory written by `save_model`, checking every file first; the model and its
    strategy's state go to `device` (the guard sets stay on the CPU, like any data). A network made by
    a ``module:function`` factory is built by importing and calling it: refused unless `trust_code`."""
    from safetensors.torch import load_file

    root = Path(path)
    manifest = verify(root)
    try:
        spec = ModelSpec.from_dict(json.loads((root / CONFIG).read_text(encoding="utf-8")))
        model = spec.build(trust_code)
        model.load_state_dict(load_file(str(root / WEIGHTS)))
        model.to(device)
        strategy = build_strategy(spec.strategy, spec.strategy_options)
        state = torch.load(root / STRATEGY, weights_only=True, map_location="cpu")
        strategy.load_state_dict(to_device(state, device))
        tensors = load_file(str(root / GUARDS))
        guards = [(tensors[f"task.{i}.x"], tensors[f"task.{i}.y"]) for i in range(len(spec.tasks))]
        extra = {name: json.loads((root / name).read_text(encoding="utf-8")) for name in manifest["files"]
                 if name not in (*REQUIRED, MANIFEST) and name.endswith(".json")}
    except CheckpointError:
        raise
    except Exception as exc:  # the hashes matched, so this is a file written by another format or version
        raise CheckpointError(f"{root}: cannot read the saved model ({type(exc).__name__}: {exc})") from exc
    if spec.tasks:
        model.set_class_mask(spec.stream(guards).class_mask(len(spec.tasks) - 1))
    model.eval()
    return SavedModel(model, strategy, spec, guards, root, extra)


def input_spec(stream: TaskStream) -> dict[str, Any]:
    """The input a model trained on this stream takes, as a service reads it: arrays of a shape (with
    ``pixels``: values 0-255 that the model sees divided by 255), pictures of a shape [C, H, W] (bytes of
    PNG or JPEG files; ``resize``: any size is resized), sentences through the frozen encoder, or token ids
    for an encoder that was trained."""
    spec = stream.input_spec
    if spec.kind == "text":
        from lifelong.encoders import ENCODER_ID, FEATURES

        if spec.encoder == "frozen":
            return {"kind": "text", "encoder": ENCODER_ID, "features": FEATURES}
        encoder = spec.encoder if spec.encoder.startswith("hf:") else ENCODER_ID  # hf:FOLDER: that folder's tokenizer
        return {"kind": "tokens", "encoder": encoder, "max_tokens": int(spec.shape[0])}
    if spec.kind == "control":
        raise CheckpointError("saving supports classifiers of arrays and text; control policies are scored by "
                              "their environments and have no guard sets to save")
    if spec.kind == "image":  # PNG or JPEG in the API, decoded as the training images were
        return {"kind": "image", "shape": list(spec.shape), "resize": spec.resize}
    return {"kind": "array", "shape": list(spec.shape), **({"pixels": True} if spec.pixels else {})}


def guard_sets(stream: TaskStream, size: int = 200, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Up to `size` held-out samples per task: from its validation split when it has one, else its test
    split (never its training data), drawn by a fixed seed."""
    out = []
    for task in stream:
        data = task.valid if task.valid is not None else task.test
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + task.id))[:size]
        x, y = fetch(data, order.sort().values)
        out.append((x.float() if x.is_floating_point() else x, y.long()))
    return out


def save_run(path: str | os.PathLike, stream: TaskStream, model: ContinualClassifier, strategy: Strategy,
             network: NetworkSpec, config: dict[str, Any] | None = None, guard_size: int = 200,
             overwrite: bool = False) -> Path:
    """Save a model trained on `stream` (every task of it learned) and built from `network`, with
    guard sets drawn from the stream. (`save_result` saves what `lifelong.run.run` returned.)

    `config` is a run's configuration (`RunConfig.to_dict()`): its strategy options and learner
    settings are kept so later updates train the same way."""
    config = config or {}
    inputs = input_spec(stream)
    names = stream.class_names or [str(c) for c in range(stream.num_classes)]
    options = dict(config.get("strategy_options") or getattr(getattr(strategy, "config", None), "to_dict", dict)())
    spec = ModelSpec(inputs, network, stream.scenario, [str(n) for n in names],
                     [{"id": t.id, "name": t.name or f"task {t.id}", "classes": [int(c) for c in t.classes]}
                      for t in stream], config.get("strategy", strategy.name), options,
                     dict(config.get("learner", {})), {"benchmark": stream.name})
    return save_model(path, model, strategy, spec, guard_sets(stream, guard_size), overwrite=overwrite)


def save_result(path: str | os.PathLike, result: Any, guard_size: int = 200, overwrite: bool = False) -> Path:
    """Save the model of a `RunResult` (`lifelong.run.run`'s return value) with its run's settings."""
    return save_run(path, result.stream, result.model, result.strategy, result.network, result.record["config"],
                    guard_size, overwrite)
