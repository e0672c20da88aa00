"""Saved model directories: a round trip keeps everything, loading checks every file, saving is atomic."""

from __future__ import annotations

import json

import pytest
import torch

from lifelong.checkpoint import (
    FORMAT_VERSION,
    MANIFEST,
    CheckpointError,
    ModelSpec,
    input_spec,
    load_model,
    save_run,
    verify,
)
from lifelong.data import split
from lifelong.data.task import ArrayDataset, InputSpec, Task, TaskStream
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import CNN, NetworkSpec, build_model
from lifelong.strategies import build_strategy


def _flat(state):
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state, key=str) for t in _flat(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _flat(v)]
    return [state]


MLP_SPEC = NetworkSpec("mlp", (1, 8, 8), (32,))


def _trained(stream, name, options=None, network=MLP_SPEC):
    torch.manual_seed(0)
    model = build_model(network, stream.num_classes, len(stream))
    learner = Learner(model, build_strategy(name, options), LearnerConfig(epochs=1, batch_size=64))
    for task in stream[:2]:
        learner.fit(stream, task.id)
    return model, learner


@pytest.mark.parametrize("name, options", [("ewc+replay", {"memory": 100}), ("si", {}), ("der++", {"memory": 60}),
                                           ("icarl", {"memory": 60}), ("replay+bic", {"memory": 60}),
                                           ("online-ewc", {"keep": 0.1, "storage": "bf16"})])
def test_round_trip_keeps_weights_strategy_state_and_predictions(tmp_path, digits, name, options):
    stream = split(*digits, num_tasks=5, scenario="class")[:2]
    model, learner = _trained(stream, name, options)
    path = save_run(tmp_path / "m", stream, model, learner.strategy, MLP_SPEC,
                    {"strategy": name, "strategy_options": options, "learner": {"lr": 0.002}})
    saved = load_model(path)
    assert saved.spec.strategy == name and saved.spec.learner == {"lr": 0.002}
    assert saved.spec.labels == [str(c) for c in range(10)] and saved.spec.scenario == "class"
    assert [t["classes"] for t in saved.spec.tasks] == [[0, 1], [2, 3]]
    for before, after in zip(_flat(learner.strategy.state_dict()), _flat(saved.strategy.state_dict()), strict=True):
        if isinstance(before, torch.Tensor):
            torch.testing.assert_close(before, after, rtol=0, atol=0, equal_nan=True)  # iCaRL keeps NaN means
        else:
            assert before == after
    x = stream[1].test.x[:20]
    t = torch.full((20,), 1)
    model.eval()
    with torch.no_grad():
        expected = learner.strategy.predict(model, x, t, model(x, t))
        got = saved.strategy.predict(saved.model, x, t, saved.model(x, t))
    torch.testing.assert_close(expected, got, rtol=0, atol=0, equal_nan=True)
    # the guard sets are held-out test samples of each task, at most 200 of them
    assert [len(y) for _, y in saved.guards] == [min(200, len(task.test)) for task in stream]
    assert set(saved.guards[1][1].tolist()) <= {2, 3}


def test_a_cnn_and_its_image_shape_round_trip(tmp_path, digits):
    stream = split(*digits, num_tasks=5, scenario="task")[:2]
    cnn = NetworkSpec("cnn", (1, 8, 8), (16,))
    model, learner = _trained(stream, "ewc", network=cnn)
    assert isinstance(model.net, CNN)
    saved = load_model(save_run(tmp_path / "cnn", stream, model, learner.strategy, cnn))
    assert saved.spec.input == {"kind": "array", "shape": [1, 8, 8]} and saved.spec.network == cnn
    x, t = stream[0].test.x[:5], torch.zeros(5, dtype=torch.long)
    assert torch.equal(model.eval()(x, t), saved.model(x, t))


def test_loading_names_what_is_missing_or_corrupt(tmp_path, digits):
    stream = split(*digits, num_tasks=5, scenario="class")[:1]
    model, learner = _trained(stream, "ewc")
    path = save_run(tmp_path / "m", stream, model, learner.strategy, MLP_SPEC)
    verify(path)

    (path / "strategy.pt").rename(tmp_path / "aside.pt")
    with pytest.raises(CheckpointError, match=r"file strategy\.pt is missing"):
        load_model(path)
    (tmp_path / "aside.pt").rename(path / "strategy.pt")

    weights = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=r"file weights\.safetensors is corrupt"):
        load_model(path)
    (path / "weights.safetensors").write_bytes(weights)

    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*upgrade lifelong"):
        load_model(path)
    (path / MANIFEST).write_text(json.dumps({**manifest, "files": {"config.json": manifest["files"]["config.json"]}}))
    with pytest.raises(CheckpointError, match="does not list"):
        load_model(path)
    (path / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json is missing"):
        load_model(path)
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(tmp_path / "nothing")


def test_saving_is_atomic_and_never_replaces_something_else(tmp_path, digits):
    stream = split(*digits, num_tasks=5, scenario="class")[:1]
    model, learner = _trained(stream, "naive")
    path = save_run(tmp_path / "m", stream, model, learner.strategy, MLP_SPEC)
    with pytest.raises(CheckpointError, match="already exists"):
        save_run(path, stream, model, learner.strategy, MLP_SPEC)
    save_run(path, stream, model, learner.strategy, MLP_SPEC, overwrite=True)  # a saved model may be replaced
    (tmp_path / "notes").mkdir()
    with pytest.raises(CheckpointError, match="not a saved model"):
        save_run(tmp_path / "notes", stream, model, learner.strategy, MLP_SPEC, overwrite=True)

    class Unsaveable:  # fails half-way through: nothing may be left behind
        name = "naive"

        def state_dict(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_run(tmp_path / "half", stream, model, Unsaveable(), MLP_SPEC)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "notes"]


def test_input_spec_of_arrays_text_and_tokens_and_control_refused():
    data = ArrayDataset(torch.zeros(4, 384), torch.zeros(4, dtype=torch.long))
    stream = TaskStream([Task(0, data, data, (0,))], 1, "class")
    assert stream.input == InputSpec("array", (384,)) and input_spec(stream) == {"kind": "array", "shape": [384]}
    stream.input = InputSpec("text", (384,), "frozen")
    assert input_spec(stream)["kind"] == "text" and input_spec(stream)["features"] == 384
    stream.input = InputSpec("text", (32,), "lora")
    assert input_spec(stream) == {"kind": "tokens", "encoder": input_spec(stream)["encoder"], "max_tokens": 32}
    stream.input = InputSpec("control", (8,))
    with pytest.raises(CheckpointError, match="control"):
        input_spec(stream)


def test_a_format_1_model_spec_still_loads():
    old = {"format": "lifelong-model", "format_version": 1, "input": {"kind": "array", "shape": [64]},
           "network": {"kind": "mlp", "in_features": 64, "hidden": [16], "dropout": 0.0}, "scenario": "class",
           "labels": ["a", "b"], "tasks": [{"id": 0, "name": "t", "classes": [0, 1]}], "strategy": "naive"}
    spec = ModelSpec.from_dict(old)
    assert spec.network == NetworkSpec("mlp", (64,), (16,)) and spec.build().net.head.out_features == 2
    with pytest.raises(CheckpointError, match="not a model spec"):
        ModelSpec.from_dict({**old, "format_version": 2, "network": {"kind": "mlp", "widths": [3]}})


def test_lifelong_run_save_writes_a_servable_model(tmp_path, capsys):
    from lifelong.cli import main

    out = tmp_path / "saved"
    code = main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "ewc+replay",
                 "--memory", "50", "--epochs", "1", "--hidden", "16", "--quiet", "--json", "--save", str(out)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)  # still exactly one JSON object on stdout
    saved = load_model(out)
    assert saved.spec.strategy == "ewc+replay" and saved.spec.strategy_options["memory"] == 50
    assert len(saved.spec.tasks) == len(result["accuracy_matrix"]) == 5
    assert saved.spec.network == NetworkSpec("mlp", (1, 8, 8), (16,))
    with pytest.raises(SystemExit) as stopped:  # refused before any training
        main(["run", "--benchmark", "control", "--save", str(tmp_path / "c"), "--quiet"])
    assert stopped.value.code == 2 and "--save supports" in capsys.readouterr().err
