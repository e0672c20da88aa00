"""The one supervised training loop: fit a task, evaluate a stream. Strategies act through hooks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lifelong import distributed
from lifelong.config import Config
from lifelong.data.task import Batch, BatchLoader, Task, TaskData, TaskStream
from lifelong.devices import AUTOCASTS, check_name, follow, resolve_device, to_device
from lifelong.models.heads import ContinualClassifier
from lifelong.optim import CompiledAdam
from lifelong.strategies.base import Strategy


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _check_distributable(strategy: Strategy) -> None:
    """Strategies that run extra forward passes of their own (DER, A-GEM, LwF, iCaRL) would bypass
    DistributedDataParallel's gradient synchronisation: refuse them rather than train ranks apart."""
    own_forward = [p.name for p in getattr(strategy, "parts", [strategy]) if p.extra_forward]
    if own_forward:
        raise ValueError(f"--distributed supports strategies whose only forward pass is the learner's; "
                         f"{', '.join(own_forward)} run their own")


OPTIMIZERS = ("auto", "adam", "adam-compiled", "sgd")
DEFAULT_LR = {"adam": 1e-3, "adam-compiled": 1e-3, "sgd": 0.03}


@dataclass
class LearnerConfig(Config):
    epochs: int = 1
    batch_size: int = 128
    lr: float | None = None  # None: 1e-3 for Adam, 0.03 for SGD
    # "adam", "sgd", or "auto" (the one the strategy is defined with, else Adam); "adam-compiled": Adam as
    # one compiled pass per tensor with consolidation's penalty folded in (lifelong.optim)
    optimizer: str = "auto"
    momentum: float = 0.0  # sgd only
    reset_optimizer: bool = True  # a fresh optimizer for every task
    importance_batch: int = 1024  # batch size of the importance pass after a task (bigger: faster)
    sharding: str = "ddp"  # under torchrun: "ddp" (replicated model) or "fsdp" (parameters sharded)
    eval_batch: int = 1000
    seed: int = 0
    device: str = "cpu"  # "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:N" or "mps"
    autocast: str = "none"  # "bf16": forward passes and losses in bfloat16 while training (importance stays fp32)

    def __post_init__(self) -> None:
        check_name(self.device)
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"autocast must be one of {AUTOCASTS}, not {self.autocast!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")

    def resolve(self, strategy: Strategy) -> LearnerConfig:
        """The config with `optimizer` and `lr` made concrete for this strategy: "auto" takes the
        optimizer a strategy part declares (A-GEM's projection assumes plain SGD), else Adam."""
        optimizer = self.optimizer
        if optimizer == "auto":
            declared = {p.optimizer for p in getattr(strategy, "parts", [strategy]) if p.optimizer}
            optimizer = declared.pop() if len(declared) == 1 else "adam"
        return self.replace(optimizer=optimizer, lr=self.lr if self.lr is not None else DEFAULT_LR[optimizer])


class Learner:
    """A model, a strategy and the loop that trains one on a task stream.

    >>> import torch
    >>> from lifelong.data import load_digits, split
    >>> from lifelong.models import MLP, ContinualClassifier
    >>> from lifelong.strategies import build_strategy
    >>> stream = split(*load_digits(), num_tasks=5, scenario="task")
    >>> torch.manual_seed(0) and None
    >>> model = ContinualClassifier(MLP(64, (32,), 10), len(stream), 10)
    >>> learner = Learner(model, build_strategy("ewc"), LearnerConfig(epochs=5))
    >>> stats = learner.fit(stream, 0)
    >>> learner.evaluate(stream)[0] > 0.9
    True
    """

    def __init__(self, model: nn.Module, strategy: Strategy, config: LearnerConfig | None = None,
                 progress: bool = False, log: Callable[[dict[str, Any]], None] | None = None):
        self.model, self.strategy = model, strategy
        self.config = (config or LearnerConfig()).resolve(strategy)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.progress, self.log = progress, log
        self.step = 0
        self.shard = (distributed.rank(), distributed.world_size())
        self.device = resolve_device(self.config.device)
        model.to(self.device)
        follow(strategy, self.device)  # a strategy with state (loaded from a checkpoint) moves with the model
        self.ddp: nn.Module | None = None
        if distributed.active():
            _check_distributable(strategy)
            if self.config.sharding == "fsdp":
                distributed.shard_model(model)  # gradients are reduce-scattered by FSDP itself
            else:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self._position = 0  # the task whose classes are live

    def _new_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = float(self.config.lr)  # type: ignore[arg-type]  # resolve() made it concrete
        optimizer: torch.optim.Optimizer
        if self.config.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=lr)
        elif self.config.optimizer == "adam-compiled":
            optimizer = CompiledAdam(params, lr=lr)
        else:
            optimizer = torch.optim.SGD(params, lr=lr, momentum=self.config.momentum)
        for part in getattr(self.strategy, "parts", [self.strategy]):  # folded, or taken back from the last one
            if hasattr(part, "fold_into"):
                part.fold_into(optimizer, self.model)
        return optimizer

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides how training goes on from here: the model's weights, the strategy's
        state, the shuffling generator, the step count, and the optimizer's state when it is kept
        across tasks (a fresh one is made for every task otherwise)."""
        keep = self.optimizer is not None and not self.config.reset_optimizer
        return {"model": self.model.state_dict(), "strategy": self.strategy.state_dict(),
                "optimizer": self.optimizer.state_dict() if keep else None,  # type: ignore[union-attr]
                "generator": self.generator.get_state(), "step": self.step, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.strategy.load_state_dict(to_device(state["strategy"], self.device))
        self.generator.set_state(state["generator"])
        self.step, self._position = int(state["step"]), int(state["position"])
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = self._new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])

    def _set_position(self, stream: TaskStream, task_id: int) -> None:
        self._position = task_id
        if isinstance(self.model, ContinualClassifier):
            self.model.set_class_mask(stream.class_mask(task_id))

    def start_task(self, stream: TaskStream, task_id: int) -> BatchLoader:
        """Everything `fit` does before its first step on task `task_id` (the strategy's `before_task`, a
        fresh optimizer where one is due, training mode); returns the task's batches. For a loop of
        one's own around `train_step`."""
        self._set_position(stream, task_id)
        self.strategy.before_task(self.model, task_id)
        loader = BatchLoader(self.strategy.train_data(stream, task_id), self.config.batch_size, shuffle=True,
                             generator=self.generator, shard=self.shard, device=self.device)
        if self.optimizer is None or self.config.reset_optimizer:
            self.optimizer = self._new_optimizer()
        self.model.train()
        return loader

    def fit(self, stream: TaskStream, task_id: int) -> dict[str, Any]:
        """Train on task `task_id` of the stream; returns the task's training statistics."""
        cfg, model, strategy = self.config, self.model, self.strategy
        loader = self.start_task(stream, task_id)
        start, losses = time.perf_counter(), []
        bar = tqdm(total=cfg.epochs * len(loader), desc=f"task {task_id}", leave=False,
                   disable=not self.progress, unit="batch")
        for epoch in range(cfg.epochs):
            for batch in loader:
                step_start = time.perf_counter()
                losses.append(self.train_step(batch))
                bar.update()
                if self.log is not None:
                    step_seconds = time.perf_counter() - step_start
                    with torch.no_grad():  # the penalty's value, for the log only (its gradient is in the step)
                        penalty = float(strategy.penalty(model))
                    self.log({"task": task_id, "epoch": epoch, "step": self.step, "loss": float(losses[-1]),
                              "penalty": penalty, "step_seconds": step_seconds})
        bar.close()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        own = BatchLoader([TaskData(stream[task_id].train, task_id)], cfg.importance_batch * self.shard[1],
                          shuffle=True, generator=torch.Generator().manual_seed(cfg.seed * 1000 + task_id),
                          shard=self.shard, device=self.device)
        strategy.after_task(model, task_id, own)
        return {"task": task_id, "steps": len(losses), "loss": float(torch.stack(losses).mean()),
                "train_seconds": train_seconds, "after_task_seconds": time.perf_counter() - start}

    def train_step(self, batch: Batch) -> Tensor:
        """One optimizer step on one batch, with every strategy hook; returns the detached loss.
        Raises `TrainingDiverged` (changing nothing) when the loss is not finite."""
        assert self.optimizer is not None, "fit() or start_task() creates the optimizer"
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.autocast == "bf16"):
            batch = self.strategy.extend_batch(batch)
            logits = (self.ddp or self.model)(batch.x, batch.task)
            if batch.mask is not None:
                logits = logits.masked_fill(~batch.mask, float("-inf"))
            loss = self.strategy.loss(self.model, batch, logits)
            extra = self.strategy.extra_loss(self.model, batch, logits)
            if extra is not None:
                loss = loss + extra
        loss = loss.float()
        if not torch.isfinite(loss):  # checked before the step, so the model is left as it was
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.step}: "
                                   "lower the learning rate or the penalty strength")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.strategy.after_backward(self.model)
        self.optimizer.step()
        self.strategy.after_step(self.model)
        self.step += 1
        return loss.detach()

    def evaluate(self, stream: TaskStream, split: str = "test", position: int | None = None) -> list[float]:
        """Accuracy on every task of the stream, with the classes live at `position` (default: the
        last task trained; matters in class-incremental streams)."""
        return self.evaluate_details(stream, split, position)[0]

    @torch.no_grad()
    def evaluate_details(self, stream: TaskStream, split: str = "test",
                         position: int | None = None) -> tuple[list[float], float | None]:
        """(accuracy per task, recency bias): the bias is the share of earlier tasks' evaluation
        samples predicted as one of the newest task's classes (None where classes are shared or
        there is no earlier task)."""
        if position is not None:
            self._set_position(stream, position)
        newest = stream[position if position is not None else self._position]
        newest_classes = torch.tensor(newest.classes, device=self.device)
        accuracies, into_newest, earlier = [], 0, 0
        for task in stream:
            accuracy, into, counted = self._score(task, split, newest_classes if task.id < newest.id else None)
            accuracies.append(accuracy)
            into_newest, earlier = into_newest + into, earlier + counted
        shared = any(set(t.classes) & set(newest.classes) for t in stream if t.id != newest.id)
        return accuracies, (into_newest / earlier if earlier and not shared else None)

    @torch.no_grad()
    def task_accuracy(self, stream: TaskStream, index: int, split: str = "test", position: int | None = None) -> float:
        """Accuracy on one task of the stream (e.g. before any training: one task's cost, not the stream's)."""
        if position is not None:
            self._set_position(stream, position)
        return self._score(stream[index], split)[0]

    def _score(self, task: Task, split: str, newest_classes: Tensor | None = None) -> tuple[float, int, int]:
        """(accuracy, samples predicted as one of `newest_classes`, samples counted for that), in eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            if task.evaluator is not None:
                return task.evaluator(self.model, task.id, split), 0, 0
            correct = total = into = 0
            data = [TaskData(task.eval_data(split), task.id)]
            for b in BatchLoader(data, self.config.eval_batch, device=self.device):
                predicted = self.strategy.predict(self.model, b.x, b.task, self.model(b.x, b.task)).argmax(-1)
                correct += int((predicted == b.y).sum())
                total += len(b.y)
                if newest_classes is not None:
                    into += int(torch.isin(predicted, newest_classes).sum())
            return correct / max(total, 1), into, total if newest_classes is not None else 0
        finally:
            self.model.train(was_training)
