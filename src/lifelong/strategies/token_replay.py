"""Replay of a token budget, for language models: stored windows of earlier tasks' text join each batch.

A budget of `tokens` is shared equally by every task learned so far: after a task, its quota of
windows is drawn from the text it trained on and older tasks give up windows (their first ones kept)
to make room, so the memory never exceeds the budget and every task keeps the same share. A window
is stored once as its raw tokens (L + 1 of them: the inputs and the last target), one byte each for
byte-level text, so the stored bytes are the budget itself.

Which windows a task keeps (`select`): ``"random"`` keeps the first ones of its (shuffled) training
data; ``"distinct"`` picks greedily the windows that add the most text not yet kept, counted in
segments between `separator` tokens (lines, for byte text). When a task's training windows are drawn
from text repeated many times (a fact batch: its 80 taught lines, 20 times over), random windows
repeat lines and, at 28 windows a batch, keep about half of them; distinct windows keep most. On
text that does not repeat, every window adds as much, and the order (random) decides.

Which stored windows a step replays: any, alike, unless `first_share` sets the share of each replayed
batch drawn from the first task's windows. In a language stream the first task is the general mixture
(with the `facts` setting's background facts, told in every paraphrase), which an even draw gives an
ever smaller share of as fact batches pile up.

How much the replayed windows weigh: by default the loss is the mean over every window of the step,
so `replay_batch` sets both how much of the memory a step sees and the old text's share of the
gradient (16 new and 32 old windows: two thirds). `replay_weight` fixes that share instead (the
loss is `(1 - w)` times the new windows' mean plus `w` times the replayed ones'), so that a step can
see more of the memory without the new text weighing less.

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

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.task import Batch
from lifelong.importance import as_batch
from lifelong.strategies.base import Strategy, StrategyConfig

SELECT = ("random", "distinct")


@dataclass
class TokenReplayConfig(StrategyConfig):
    tokens: int = 65_536  # stored tokens in all, shared equally by the tasks learned so far
    replay_batch: int | None = None  # stored windows per step; None: as many as the new batch
    select: str = "random"  # "random": a task's first windows; "distinct": the ones adding the most new text
    separator: int = 10  # select "distinct": the token between segments (a newline, for byte text)
    first_share: float | None = None  # share of the replayed windows drawn from the first task's; None: even
    replay_weight: float | None = None  # the replayed windows' share of the loss; None: their share of the windows

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, not {self.tokens}")
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {SELECT}, not {self.select!r}")
        if self.replay_batch is not None and self.replay_batch < 1:
            raise ValueError(f"replay_batch must be >= 1, not {self.replay_batch}")
        if self.first_share is not None and not 0.0 <= self.first_share <= 1.0:
            raise ValueError(f"first_share must be in [0, 1], not {self.first_share}")
        if self.replay_weight is not None and not 0.0 <= self.replay_weight <= 1.0:
            raise ValueError(f"replay_weight must be in [0, 1], not {self.replay_weight}")


def as_windows(batch: Batch) -> Tensor:
    """The batch's text as windows [N, L + 1]; refuses targets that are not the inputs shifted."""
    x, y = batch.x, batch.y
    if not isinstance(x, Tensor) or x.dim() != 2 or y.shape != x.shape or not torch.equal(
            x[:, 1:].long(), y[:, :-1]):
        raise ValueError("token-replay stores language-model windows: inputs [N, L] and targets equal to the "
                         "inputs shifted by one token (use `replay` for other data)")
    return torch.cat([x, y[:, -1:].to(x.dtype)], 1)


def distinct_windows(windows: Tensor, count: int, separator: int) -> Tensor:
    """`count` of `windows` [N, L + 1], chosen greedily: each next one is the window that repeats the
    fewest tokens of what is already kept, counted in whole segments (runs of tokens between two
    `separator`s: whole lines, for byte text; a window's cut ends count as new). Ties go to the
    earlier window, so on text that never repeats this is the given order. Returned in the order
    chosen, so that a shorter prefix is still the most distinct (older tasks give up their last ones).

    >>> w = torch.tensor([[0, 1, 0, 2, 0], [0, 1, 0, 2, 0], [0, 3, 0, 4, 0]])
    >>> distinct_windows(w, 2, separator=0).tolist()
    [[0, 1, 0, 2, 0], [0, 3, 0, 4, 0]]
    """
    segments = []
    for row in windows.tolist():
        cuts = [i for i, token in enumerate(row) if token == separator]
        segments.append({tuple(row[i + 1:j]) for i, j in itertools.pairwise(cuts) if j > i + 1})
    size = windows.shape[1]
    # lazy greedy: a window's gain only falls as more is kept, so a stale gain is an upper bound and
    # the top of the heap, once recomputed and still on top, is the best (ties: the earlier window)
    heap = [(-size, i) for i in range(len(segments))]
    heapq.heapify(heap)
    kept: set[tuple[int, ...]] = set()
    chosen: list[int] = []
    while heap and len(chosen) < count:
        _, i = heapq.heappop(heap)
        gain = size - sum(len(p) for p in segments[i] & kept)
        if heap and (-gain, i) > heap[0]:
            heapq.heappush(heap, (-gain, i))
            continue
        chosen.append(i)
        kept |= segments[i]
    return windows[chosen]


def keep_all_budget(windows_per_task: Sequence[int], window_tokens: int) -> int:
    """The least `tokens` with which token-replay keeps every window of every task, each `window_tokens`
    long: after the last of T tasks each keeps `tokens // (window_tokens * T)` windows (and more before), so
    the largest task decides. Past this budget a larger one keeps, and draws from, the very same windows:
    the two runs are one run.

    >>> keep_all_budget([24, 16, 16], window_tokens=33)
    2376
    """
    return window_tokens * len(windows_per_task) * max(windows_per_task, default=0)


class TokenReplay(Strategy):
    name = "token-replay"

    def __init__(self, config: TokenReplayConfig | None = None):
        self.config = config or TokenReplayConfig()
        self.windows: dict[int, Tensor] = {}  # task id -> stored windows [n, L + 1]
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.task_id: int | None = None  # the task being learned: its windows are the new ones
        self._joined: tuple[Tensor, Tensor] | None = None  # every stored window and its task, joined once

    def before_task(self, model: nn.Module, task_id: int) -> None:
        self.task_id = task_id

    def loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor:
        weight, task_id = self.config.replay_weight, self.task_id
        if weight is None or task_id is None:
            return super().loss(model, batch, logits)
        old: Tensor = batch.task != task_id
        if not old.any() or old.all():
            return super().loss(model, batch, logits)
        new_loss, old_loss = (Strategy.loss(self, model, Batch(batch.x[rows], batch.y[rows], batch.task[rows]),
                                            logits[rows]) for rows in (~old, old))
        return (1.0 - weight) * new_loss + weight * old_loss

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.windows.values())

    def after_task(self, model: nn.Module | None, task_id: int, batches: Iterable[Any]) -> None:
        collected, count = [], 0
        quota: int | None = None
        distinct = self.config.select == "distinct"
        for raw in batches:
            windows = as_windows(as_batch(raw))
            if quota is None:
                quota = self.config.tokens // (windows.shape[1] * (len(self.windows | {task_id: windows})))
            if count >= quota and not distinct:  # "distinct" chooses among all of the task's windows
                break
            collected.append(windows if distinct else windows[: quota - count])
            count += len(collected[-1])
        if quota is None:
            return
        for t in self.windows:  # older tasks make room: the same share for each
            self.windows[t] = self.windows[t][:quota]
        if count and quota:
            kept = torch.cat(collected)
            kept = distinct_windows(kept, quota, self.config.separator) if distinct else kept
            self.windows[task_id] = kept.clone()
        self._joined = None

    def _stored_windows(self) -> tuple[Tensor, Tensor]:
        """Every stored window [M, L + 1] and its task id, joined once per change of the memory rather
        than at every step: a step's cost then does not grow with the memory (nor with the tasks)."""
        if self._joined is None:
            self._joined = (torch.cat(list(self.windows.values())),
                            torch.cat([torch.full((len(w),), t, dtype=torch.long) for t, w in self.windows.items()]))
        return self._joined

    def stored(self) -> Batch:
        """Everything in memory as one batch (task ids say where each window came from)."""
        windows, tasks = self._stored_windows()
        return Batch(windows[:, :-1], windows[:, 1:].long(), tasks)

    def sample(self, n: int) -> Batch:
        """Up to `n` stored windows, drawn without replacement (`first_share` of them from the first task)."""
        windows, tasks = self._stored_windows()
        share = self.config.first_share
        if share is None or len(self.windows) < 2:
            idx = torch.randperm(len(tasks), generator=self.generator)[:n]
        else:
            first, wanted = tasks == min(self.windows), round(share * n)
            pools = ((first.nonzero()[:, 0], wanted), ((~first).nonzero()[:, 0], n - wanted))
            idx = torch.cat([pool[torch.randperm(len(pool), generator=self.generator)[:count]]
                             for pool, count in pools])
        chosen = windows[idx]  # only the drawn rows become targets (int64), not the whole memory
        return Batch(chosen[:, :-1], chosen[:, 1:].long(), tasks[idx])

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
        self._joined = None
