"""Stop and resume a run between tasks: everything that decides what happens next is saved.

After each task `save_progress` writes DIR/progress.pt atomically (a temporary file, fsync, rename):
the model's weights, the optimizer's state, the strategy's state (importances, anchors, memories,
their random generators), the learner's shuffling generator and step count, the global random
states (torch, numpy, Python), and the accuracy matrix so far. A run resumed from it continues
exactly where it stopped: on CPU, with the same thread count, the final matrix is bit-identical to
an uninterrupted run's (tests/test_resume.py kills a run with SIGKILL to check).

The file is a pickle written by this library: load only progress files you wrote.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong import atomic
from lifelong.devices import to_device

FILE = "progress.pt"
FORMAT = 2  # 2: the learner's own state_dict (1: its parts saved one by one)


class ResumeError(RuntimeError):
    """A progress file that is missing, corrupt, or from a different run."""


def save_progress(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` plus the global random states to DIR/progress.pt, atomically."""
    state = to_device(state, "cpu")  # CPU tensors: a run trained on a GPU resumes on any device
    full = {**state, "format": FORMAT, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                               "python": random.getstate()}}
    return atomic.torch_save(Path(directory) / FILE, full)


def load_progress(directory: str | os.PathLike, config: dict[str, Any]) -> dict[str, Any]:
    """The saved state, after checking it belongs to a run with this `config`; restores the global
    random states."""
    path = Path(directory) / FILE
    if not path.exists():
        raise ResumeError(f"nothing to resume: {path} does not exist (run with --checkpoint-dir {directory} first)")
    try:
        state = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # a truncated or foreign file: say so, whatever the unpickler raised
        raise ResumeError(f"{path} is not a readable lifelong progress file ({exc}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResumeError(f"{path} has an unknown format; it was not written by this version of lifelong")
    if state.get("config") != config:
        raise ResumeError(f"{path} belongs to a run with another configuration; resume with the same options")
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return state
