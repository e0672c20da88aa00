"""Inputs in, predictions out: one loaded version of the model.

What a model takes follows its saved input spec (inputs.py): nested lists of numbers (array models),
pictures as base64 PNG or JPEG (image models), strings for text models, embedded by the frozen MiniLM
encoder (input kind ``text``) or tokenised for a trained encoder (``tokens``: MiniLM's tokenizer, or
the one of the model's own Hugging Face folder). Anything else is an `InputError`, which the HTTP
layer turns into a 4xx with its message.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.checkpoint import ModelSpec, SavedModel
from lifelong.devices import follow, resolve_device
from lifelong.service.inputs import InputError, check_texts, model_inputs, parse_arrays

__all__ = ["InputError", "ServedModel", "TextFeatures", "check_texts", "parse_arrays", "spec_summary"]


class TextFeatures:
    """Sentence embeddings for served text: the frozen encoder, loaded once, with a bounded in-memory
    cache (serving must not rewrite the on-disk embedding cache on every request)."""

    def __init__(self, capacity: int = 20_000):
        from lifelong.encoders import load_encoder, tokenize

        self.encoder, self.tokenize = load_encoder().eval(), tokenize
        self.capacity = capacity
        self.cache: OrderedDict[str, Tensor] = OrderedDict()
        self.lock = threading.Lock()

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        with self.lock:  # the tokenizer and the cache are not thread-safe
            missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
            if missing:
                vectors = self.encoder(self.tokenize(missing))
                for text, vector in zip(missing, vectors, strict=True):
                    self.cache[text] = vector
            for text in texts:
                self.cache.move_to_end(text)
            out = torch.stack([self.cache[t] for t in texts])
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
            return out


class ServedModel:
    """One version, ready to answer: inputs are checked, featurised, and predicted over the classes
    live for the asked task (by default every class learned)."""

    def __init__(self, version: int, saved: SavedModel, text_features: Callable[[Sequence[str]], Tensor] | None,
                 device: str = "cpu"):
        self.version, self.saved, self.spec = version, saved, saved.spec
        self.device = resolve_device(device)
        self.model, self.strategy = saved.model.eval().to(self.device), saved.strategy
        follow(self.strategy, self.device)
        self.kind = self.spec.input["kind"]
        if self.kind == "text" and text_features is None:
            raise ValueError("a text model needs the text features (the frozen encoder)")
        self.text_features = text_features
        self.num_tasks = len(self.spec.tasks)
        self.lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    def features(self, values: Sequence[Any], what: str = "input") -> Tensor:
        if self.kind == "text":
            assert self.text_features is not None
            return self.text_features(check_texts(values, what))
        if self.kind == "tokens":
            from lifelong.encoders import hf_folder, tokenize

            with self.lock:  # a tokenizer is not thread-safe
                return tokenize(check_texts(values, what), self.spec.input["max_tokens"],
                                hf_folder(self.spec.input["encoder"]))
        return model_inputs(self.spec.input, values, what)

    def check_task(self, task: int | None) -> int:
        """The task whose class mask is used: the given one, or (shared-head scenarios) the last."""
        if task is None:
            if self.spec.scenario == "task":
                raise InputError(f"this model is task-incremental: give a task (0-{self.num_tasks - 1})")
            return self.num_tasks - 1
        if not 0 <= task < self.num_tasks:
            raise InputError(f"unknown task {task}; this model has learned tasks 0-{self.num_tasks - 1}")
        return task

    @torch.no_grad()
    def predict(self, values: Sequence[Any], task: int | None = None) -> list[dict[str, Any]]:
        row = self.check_task(task)
        x = self.features(values).to(self.device)
        t = torch.full((len(x),), row, dtype=torch.long, device=self.device)
        scores = self.strategy.predict(self.model, x, t, self.model(x, t)).float().cpu()
        # a strategy may score classes it holds no exemplar of as NaN (iCaRL): they cannot be predicted
        probability = torch.softmax(scores.nan_to_num(nan=float("-inf")), dim=-1).nan_to_num(0.0)
        best = probability.argmax(-1)
        return [{"label": self.labels[int(b)], "score": round(float(probability[i, b]), 6)}
                for i, b in enumerate(best)]

    def check_example(self, example: dict[str, Any], i: int) -> None:
        """A feedback example must be an input this model takes, a label and (optionally) a known task
        whose classes include the label when the label is known and tasks have their own classes."""
        what = f"example {i}: input"
        if self.kind in ("text", "tokens"):  # no embedding at intake: the update embeds its feedback in bulk
            check_texts([example["input"]], what)
        else:
            model_inputs(self.spec.input, [example["input"]], what)
        label, task = example["label"], example.get("task")
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"example {i}: the label must be a non-empty string")
        if task is not None:
            self.check_task(task)
            classes = self.spec.tasks[task]["classes"]
            if self.spec.scenario == "task" and label in self.labels and self.labels.index(label) not in classes:
                raise InputError(f"example {i}: label {label!r} is not one of task {task}'s classes")


def spec_summary(spec: ModelSpec) -> dict[str, Any]:
    """What a client needs to know about a version: input, labels, tasks."""
    return {"input": spec.input, "scenario": spec.scenario, "labels": spec.labels,
            "tasks": [{"id": t["id"], "name": t.get("name", ""), "classes": [spec.labels[c] for c in t["classes"]]}
                      for t in spec.tasks], "strategy": spec.strategy}
