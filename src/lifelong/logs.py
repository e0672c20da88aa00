"""Training logs: CSV files (always available) or TensorBoard event files (with the `tensorboard`
package). A log is a callable that takes the records `Learner` and `run` emit:

- every optimizer step: ``{"task", "epoch", "step", "loss", "penalty", "step_seconds"}``;
- after each task's evaluation: ``{"task", "step", "accuracy": [accuracy on every task]}`` (for
  control tasks, the mean return per episode, before normalisation).

>>> import csv, tempfile
>>> folder = tempfile.mkdtemp()
>>> with open_log(["csv"], folder) as log:
...     log({"task": 0, "epoch": 0, "step": 1, "loss": 0.7, "penalty": 0.0, "step_seconds": 0.01})
...     log({"task": 0, "step": 1, "accuracy": [0.9, 0.5]})
>>> [row["accuracy"] for row in csv.DictReader(open(f"{folder}/accuracy.csv"))]
['0.9', '0.5']
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

KINDS = ("csv", "tensorboard")
STEP_FIELDS = ("task", "epoch", "step", "loss", "penalty", "step_seconds")
ACCURACY_FIELDS = ("after_task", "step", "task", "accuracy")


def check_kinds(kinds: Sequence[str]) -> None:
    """ValueError for an unknown kind, or for tensorboard when its package is not installed (before
    a long run starts, not after it)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown log kind {kind!r}; choose from {', '.join(KINDS)}")
    if "tensorboard" in kinds and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--log tensorboard needs the tensorboard package: pip install tensorboard "
                         "(or use --log csv, which needs nothing)")


def run_folder(root: str | os.PathLike, strategy: str, seed: int) -> Path:
    """One run's log folder under `root`: <strategy>-seed<seed>, so several runs sit side by side."""
    return Path(root) / f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', strategy)}-seed{seed}"


class CSVLog:
    """steps.csv (one row per optimizer step) and accuracy.csv (one row per task after each task)."""

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._files: list[TextIO] = []
        self.steps = self._writer(folder / "steps.csv", STEP_FIELDS)
        self.accuracy = self._writer(folder / "accuracy.csv", ACCURACY_FIELDS)

    def _writer(self, path: Path, fields: Sequence[str]) -> csv.DictWriter:
        f = open(path, "w", newline="")  # noqa: SIM115 - kept open for the run, closed by close()
        self._files.append(f)
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        return writer

    def __call__(self, record: dict[str, Any]) -> None:
        if "accuracy" in record:
            for task, accuracy in enumerate(record["accuracy"]):
                self.accuracy.writerow({"after_task": record["task"], "step": record["step"], "task": task,
                                        "accuracy": accuracy})
            for f in self._files:  # a task is done: make it readable while the run goes on
                f.flush()
        else:
            self.steps.writerow(record)

    def close(self) -> None:
        for f in self._files:
            f.close()


class TensorBoardLog:
    """Scalars train/loss, train/penalty, train/step_seconds per step; accuracy/task_NN and
    accuracy/mean_seen (mean over the tasks learned so far) after each task, at the step reached."""

    def __init__(self, folder: str | os.PathLike):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def __call__(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if "accuracy" in record:
            accuracy = record["accuracy"]
            for task, value in enumerate(accuracy):
                self.writer.add_scalar(f"accuracy/task_{task:02d}", value, step)
            seen = accuracy[: record["task"] + 1]
            self.writer.add_scalar("accuracy/mean_seen", sum(seen) / len(seen), step)
            self.writer.flush()
        else:
            for key in ("loss", "penalty", "step_seconds"):
                if key in record:
                    self.writer.add_scalar(f"train/{key}", record[key], step)

    def close(self) -> None:
        self.writer.close()


class TrainingLog:
    """Several logs behind one callable; a context manager that closes them."""

    def __init__(self, logs: Sequence[CSVLog | TensorBoardLog]):
        self.logs = list(logs)

    def __call__(self, record: dict[str, Any]) -> None:
        for log in self.logs:
            log(record)

    def close(self) -> None:
        for log in self.logs:
            log.close()

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_log(kinds: Sequence[str], folder: str | os.PathLike) -> TrainingLog:
    """The logs of the given kinds, all writing into `folder` (created)."""
    check_kinds(kinds)
    made: dict[str, type[CSVLog] | type[TensorBoardLog]] = {"csv": CSVLog, "tensorboard": TensorBoardLog}
    return TrainingLog([made[kind](folder) for kind in dict.fromkeys(kinds)])
