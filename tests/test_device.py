"""`--device`: every tensor of a run follows the requested device (checked here on the CPU, the only
device of the machines the tests run on), and devices this machine lacks are refused up front."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lifelong.cli import main
from lifelong.data.streams import StreamConfig
from lifelong.devices import DeviceError, resolve_device, tensors_of, to_device
from lifelong.learner import LearnerConfig
from lifelong.models import ModelConfig
from lifelong.run import RunConfig, run

FAMILIES: list[tuple[str, dict[str, Any]]] = [
    ("ewc", {}), ("online-ewc", {}), ("si", {}), ("mas", {}), ("replay", {"memory": 40}),
    ("der++", {"memory": 40}), ("agem", {"memory": 40}), ("lwf", {}), ("icarl", {"memory": 40}),
    ("kfac-ewc", {}), ("gpm", {"samples": 50}),
]


def _memory_tensors(strategy: Any) -> list[torch.Tensor]:
    out = []
    for part in getattr(strategy, "parts", [strategy]):
        memory = getattr(part, "memory", None)
        if memory is not None:
            out += [t for t in (memory.x, memory.y, memory.task, memory.rank, *memory.extras.values()) if t is not None]
    return out


def _misplaced(result: Any, device: torch.device) -> list[str]:
    model, strategy = result.model, result.strategy
    named = [*(("model", t) for t in model.parameters()), *(("buffer", t) for t in model.buffers()),
             *(("state", t) for t in tensors_of(strategy.state_dict())),
             *(("memory", t) for t in _memory_tensors(strategy))]
    return [f"{where} {tuple(t.shape)} on {t.device}" for where, t in named if t.device != device]


@pytest.mark.parametrize(("strategy", "options"), FAMILIES, ids=[name for name, _ in FAMILIES])
def test_whole_stream_keeps_every_tensor_on_the_requested_device(strategy: str, options: dict[str, Any]) -> None:
    cfg = RunConfig(StreamConfig("split-digits", "class", 2), strategy, options,
                    LearnerConfig(epochs=1, batch_size=64, device="cpu"), ModelConfig(hidden=(16,)))
    result = run(cfg)
    assert result.record["device"] == "cpu"
    assert _misplaced(result, torch.device("cpu")) == []
    assert all(t.device.type == "cpu" for t in tensors_of(result.strategy.state_dict()))


def test_domain_stream_and_bf16_autocast_train_and_keep_importance_fp32() -> None:
    cfg = RunConfig(StreamConfig("permuted-digits", None, 2), "ewc", {},
                    LearnerConfig(epochs=1, batch_size=64, device="cpu", autocast="bf16"), ModelConfig(hidden=(16,)))
    result = run(cfg)
    assert _misplaced(result, torch.device("cpu")) == []
    assert all(p.dtype == torch.float32 for p in result.strategy.quadratic.precision)
    assert all(0 <= a <= 1 for a in result.record["accuracy_matrix"][-1])


def test_to_device_moves_nested_state_but_keeps_generator_states() -> None:
    state = {"a": [torch.zeros(2), (torch.ones(1),)], "generator": torch.Generator().get_state(), "n": 3}
    moved = to_device(state, "cpu")
    assert moved["n"] == 3 and moved["generator"] is state["generator"]
    assert len(list(tensors_of(moved))) == 2  # the generator's state is not counted


def test_unknown_or_absent_devices_are_refused() -> None:
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match="unknown device 'bogus'"):
        resolve_device("bogus")
    with pytest.raises(ValueError, match="unknown device"):
        LearnerConfig(device="gpu")
    with pytest.raises(ValueError, match="autocast"):
        LearnerConfig(autocast="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device here"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("command", [["run"], ["compare", "--strategies", "ewc,si"]])
def test_cli_refuses_a_device_it_cannot_use(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as bogus:
        main([*command, "--device", "bogus", "--json"])
    assert bogus.value.code == 2 and "unknown device 'bogus'" in capsys.readouterr().err
    if torch.cuda.is_available():
        return
    with pytest.raises(SystemExit) as absent:
        main([*command, "--device", "cuda", "--json"])
    assert absent.value.code == 2 and "no CUDA device here" in capsys.readouterr().err


def test_serve_refuses_an_absent_device(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as bogus:
        main(["serve", "--model", str(tmp_path / "none"), "--device", "bogus"])
    assert bogus.value.code == 2 and "unknown device" in capsys.readouterr().err
