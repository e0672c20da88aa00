"""Self-describing saved models: one directory that holds everything needed to serve and keep learning.

A saved model directory holds

- ``weights.safetensors``: the network's weights;
- ``strategy.pt``: the strategy's state (importances, anchors, replay memory), read back with
  ``torch.load(weights_only=True)`` so loading never runs pickled code;
- ``guards.safetensors``: per learned task, a small held-out evaluation set (the "guard set" every
  later update is checked on);
- ``config.json``: the kind of input (``array`` with its shape, or ``text`` through the frozen
  MiniLM encoder), the network's shape, label names, tasks learned, the strategy and its options,
  the training settings, provenance, the format version and the library version;
- any extra JSON files the caller adds (a service keeps its update report there);
- ``manifest.json``, written last: the format version and the sha256 of every other file.

`save_model` writes into a temporary directory beside the target and renames it into place, so a
reader sees either no model or a whole one. `load_model` checks the format version and every file's
hash and says exactly what is missing or corrupt.

>>> import tempfile, torch
>>> from lifelong.data import load_digits, split
>>> from lifelong.learner import Learner, LearnerConfig
>>> from lifelong.models import MLP, ContinualClassifier
>>> from lifelong.strategies import build_strategy
>>> stream = split(*load_digits(), num_tasks=5, scenario="class")
>>> torch.manual_seed(0) and None
>>> model = ContinualClassifier(MLP(64, (32,), 10), len(stream), 10)
>>> learner = Learner(model, build_strategy("ewc+replay", {"memory": 100}), LearnerConfig(epochs=2))
>>> learner.fit(stream, 0)["task"]
0
>>> path = save_run(tempfile.mkdtemp() + "/digits", stream[:1], model, learner.strategy)
>>> saved = load_model(path)
>>> saved.spec.input, saved.spec.labels[:3], [t["classes"] for t in saved.spec.tasks]
({'kind': 'array', 'shape': [1, 8, 8]}, ['0', '1', '2'], [[0, 1]])
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.task import ArrayDataset, Task, TaskStream, fetch
from lifelong.models import CNN, MLP, ContinualClassifier
from lifelong.strategies import build_strategy
from lifelong.strategies.base import Strategy

FORMAT = "lifelong-model"
FORMAT_VERSION = 1
WEIGHTS, STRATEGY, GUARDS, CONFIG, MANIFEST = ("weights.safetensors", "strategy.pt", "guards.safetensors",
                                               "config.json", "manifest.json")
REQUIRED = (CONFIG, WEIGHTS, STRATEGY, GUARDS)
TEXT_FEATURES = 384  # all-MiniLM-L6-v2 sentence embeddings


class CheckpointError(ValueError):
    """A saved model directory that is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class ModelSpec:
    """What a saved model is: enough to rebuild the network, read its inputs and name its outputs.

    `input`: ``{"kind": "array", "shape": [...]}`` (one sample's shape) or ``{"kind": "text",
    "encoder": ..., "features": 384}``. `network`: ``{"kind": "mlp", "in_features", "hidden",
    "dropout"}`` or ``{"kind": "cnn", "in_channels", "image_size", "hidden", "dropout"}``. `tasks`: one
    ``{"id", "name", "classes"}`` per learned task, in order. `history`: free-form provenance (the
    parent version, the feedback an update learned from)."""

    input: dict[str, Any]
    network: dict[str, Any]
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
                **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        missing = [k for k in ("input", "network", "scenario", "labels", "tasks", "strategy") if k not in d]
        if missing:
            raise CheckpointError(f"{CONFIG} lacks the field(s) {missing}")
        return cls(d["input"], d["network"], d["scenario"], list(d["labels"]), list(d["tasks"]), d["strategy"],
                   dict(d.get("strategy_options", {})), dict(d.get("learner", {})), dict(d.get("history", {})))

    def build_network(self, num_classes: int | None = None) -> nn.Module:
        """A fresh network of this shape (weights to be loaded into it)."""
        net, out = self.network, num_classes or self.num_classes
        if net["kind"] == "mlp":
            return MLP(int(net["in_features"]), tuple(net["hidden"]), out, float(net.get("dropout", 0.0)))
        if net["kind"] == "cnn":
            return CNN(int(net["in_channels"]), int(net["image_size"]), out, int(net["hidden"]),
                       float(net.get("dropout", 0.0)))
        raise CheckpointError(f"unknown network kind {net['kind']!r} in {CONFIG}")

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


def network_spec(net: nn.Module, input_spec: dict[str, Any]) -> dict[str, Any]:
    """Read the shape of an MLP or CNN back from the module itself."""
    if isinstance(net, MLP):
        linears = [m for m in net.layers if isinstance(m, nn.Linear)]
        drop = [m.p for m in net.layers if isinstance(m, nn.Dropout)]
        return {"kind": "mlp", "in_features": linears[0].in_features,
                "hidden": [m.out_features for m in linears[:-1]], "dropout": drop[0] if drop else 0.0}
    if isinstance(net, CNN):
        fc = next(m for m in net.layers if isinstance(m, nn.Linear))
        dropout = next(m.p for m in net.layers if isinstance(m, nn.Dropout))
        conv = net.layers[0]
        assert isinstance(conv, nn.Conv2d)
        return {"kind": "cnn", "in_channels": conv.in_channels, "image_size": int(input_spec["shape"][-1]),
                "hidden": fc.out_features, "dropout": dropout}
    raise CheckpointError(f"saving supports MLP and CNN networks, not {type(net).__name__} "
                          "(fine-tuned or LoRA text encoders and control policies cannot be saved yet)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / WEIGHTS))
        torch.save(strategy.state_dict(), tmp / STRATEGY)
        tensors: dict[str, Tensor] = {}
        for i, (x, y) in enumerate(guards):
            tensors[f"task.{i}.x"], tensors[f"task.{i}.y"] = x.contiguous().clone(), y.long().contiguous().clone()
        save_file(tensors, str(tmp / GUARDS))
        _write_json(tmp / CONFIG, spec.to_dict())
        for name, obj in (extra or {}).items():
            _write_json(tmp / name, obj)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync(tmp / name)
        _write_json(tmp / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                     "files": {name: _sha256(tmp / name) for name in files}})
        _fsync(tmp / MANIFEST)
        _fsync(tmp)
        if final.exists():  # overwrite: move the old model aside first, so a crash leaves one whole copy
            old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def load_model(path: str | os.PathLike) -> SavedModel:
    """Read a model directory written by `save_model`, checking every file first."""
    from safetensors.torch import load_file

    root = Path(path)
    manifest = verify(root)
    try:
        spec = ModelSpec.from_dict(json.loads((root / CONFIG).read_text(encoding="utf-8")))
        net = spec.build_network()
        model = ContinualClassifier(net, max(1, len(spec.tasks)), spec.num_classes)
        model.load_state_dict(load_file(str(root / WEIGHTS)))
        strategy = build_strategy(spec.strategy, spec.strategy_options)
        strategy.load_state_dict(torch.load(root / STRATEGY, weights_only=True))
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
    """The input a model trained on this stream takes: text through the frozen encoder, or arrays."""
    encoder = stream.info.get("encoder")
    if encoder == "frozen":
        from lifelong.models.text import ENCODER_ID

        return {"kind": "text", "encoder": ENCODER_ID, "features": TEXT_FEATURES}
    if encoder is not None or stream.info.get("kind") == "control":
        raise CheckpointError("saving supports array inputs and text through the frozen encoder, not "
                              f"{'encoder ' + repr(encoder) if encoder else 'control tasks'}")
    x, _ = fetch(stream[0].train, torch.tensor([0]))
    return {"kind": "array", "shape": list(x.shape[1:])}


def guard_sets(stream: TaskStream, size: int = 200, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Up to `size` held-out samples per task: from its validation split when it has one, else its test
    split (never its training data), drawn by a fixed seed."""
    out = []
    for task in stream:
        data = task.valid if task.valid is not None else task.test
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + task.id))[:size]
        x, y = fetch(data, order.sort().values)
        out.append((x.float(), y.long()))
    return out


def save_run(path: str | os.PathLike, stream: TaskStream, model: ContinualClassifier, strategy: Strategy,
             config: dict[str, Any] | None = None, guard_size: int = 200, overwrite: bool = False) -> Path:
    """Save a model trained on `stream` (every task of it learned), with guard sets drawn from it.

    `config` is a run's configuration (`RunConfig.to_dict()`): its strategy options and learner
    settings are kept so later updates train the same way."""
    config = config or {}
    inputs = input_spec(stream)
    names = stream.class_names or [str(c) for c in range(stream.num_classes)]
    options = dict(config.get("strategy_options") or getattr(getattr(strategy, "config", None), "to_dict", dict)())
    spec = ModelSpec(inputs, network_spec(model.net, inputs), stream.scenario, [str(n) for n in names],
                     [{"id": t.id, "name": t.name or f"task {t.id}", "classes": [int(c) for c in t.classes]}
                      for t in stream], config.get("strategy", strategy.name), options,
                     dict(config.get("learner", {})), {"benchmark": stream.name})
    return save_model(path, model, strategy, spec, guard_sets(stream, guard_size), overwrite=overwrite)
