"""Replay of a token budget, for language models: stored windows of earlier tasks' text join each batch.

A budget of `tokens` is shared equally by every task learned so far: after a task, its quota of
windows is drawn from the text it trained on and older tasks give up windows (their first ones kept)
to make room, so the memory never exceeds the budget and every task keeps the same share. A window
is stored once as its raw tokens (L + 1 of them: the inputs and the last target), one byte each for
byte-level text, so the stored bytes are the budget itself.

The batches must be language-model windows: targets y are the inputs x shifted by one token
(`lifelong.data.lm.window_dataset`). For classification data use `replay`.

>>> import torch
>>> from lifelong.data.task import Batch
>>> text = torch.arange(40, dtype=torch.uint8).unfold(0, 9, 4)  # windows of 9 tokens
>>> batch = Batch(text[:, :-1], text[:, 1:].long(), torch.zeros(len(text), dtype=torch.long))
>>> replay = TokenReplay(TokenReplayConfig(tokens=27))
>>> replay.after_task(None, 0, [batch])
>>> replay.nbytes, len(replay.extend_batch(batch).y)
(27, 11)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.importance import as_batch
from lifelong.strategies.base import Strategy, StrategyConfig


@dataclass
class TokenReplayConfig(StrategyConfig):
    tokens: int = 65_536  # stored tokens in all, shared equally by the tasks learned so far
    replay_batch: int | None = None  # stored windows per step; None: as many as the new batch

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, not {self.tokens}")
        if self.replay_batch is not None and self.replay_batch < 1:
            raise ValueError(f"replay_batch must be >= 1, not {self.replay_batch}")


def as_windows(batch: Batch) -> Tensor:
    """The batch's text as windows [N, L + 1]; refuses targets that are not the inputs shifted."""
    x, y = batch.x, batch.y
    if not isinstance(x, Tensor) or x.dim() != 2 or y.shape != x.shape or not torch.equal(
            x[:, 1:].long(), y[:, :-1]):
        raise ValueError("token-replay stores language-model windows: inputs [N, L] and targets equal to the "
                         "inputs shifted by one token (use `replay` for other data)")
    return torch.cat([x, y[:, -1:].to(x.dtype)], 1)


class TokenReplay(Strategy):
    name = "token-replay"

    def __init__(self, config: TokenReplayConfig | None = None):
        self.config = config or TokenReplayConfig()
        self.windows: dict[int, Tensor] = {}  # task id -> stored windows [n, L + 1]
        self.generator = torch.Generator().manual_seed(self.config.seed)

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.windows.values())

    def after_task(self, model: nn.Module | None, task_id: int, batches: Iterable[Any]) -> None:
        collected, count = [], 0
        quota: int | None = None
        for raw in batches:
            windows = as_windows(as_batch(raw))
            if quota is None:
                quota = self.config.tokens // (windows.shape[1] * (len(self.windows | {task_id: windows})))
            if count >= quota:
                break
            collected.append(windows[: quota - count])
            count += len(collected[-1])
        if quota is None:
            return
        for t in self.windows:  # older tasks make room: the same share for each
            self.windows[t] = self.windows[t][:quota]
        if count:
            self.windows[task_id] = torch.cat(collected).clone()

    def stored(self) -> Batch:
        """Everything in memory as one batch (task ids say where each window came from)."""
        windows = torch.cat(list(self.windows.values()))
        tasks = torch.cat([torch.full((len(w),), t, dtype=torch.long) for t, w in self.windows.items()])
        return Batch(windows[:, :-1], windows[:, 1:].long(), tasks)

    def sample(self, n: int) -> Batch:
        """Up to `n` stored windows, drawn without replacement."""
        everything = self.stored()
        idx = torch.randperm(len(everything.y), generator=self.generator)[:n]
        return Batch(everything.x[idx], everything.y[idx], everything.task[idx])

    def extend_batch(self, batch: Batch) -> Batch:
        if not self.windows:
            return batch
        old = self.sample(self.config.replay_batch or len(batch.y))
        device = batch.y.device  # memory stays where its windows came from; the batch's device decides
        return Batch(torch.cat([batch.x, old.x.to(device, batch.x.dtype)]), torch.cat([batch.y, old.y.to(device)]),
                     torch.cat([batch.task, old.task.to(device)]))

    def state_dict(self) -> dict[str, Any]:
        return {"windows": {int(t): w.clone() for t, w in self.windows.items()},
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows = {int(t): w.clone() for t, w in state["windows"].items()}
        self.generator.set_state(state["generator"])
