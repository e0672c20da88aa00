"""Function-space consolidation for language models (strategy `lm-distill`): keep the previous
model's next-token distributions on old text while learning new text (knowledge distillation, Hinton
et al. 2015; as a continual-learning method: LwF, Li & Hoiem 2017, and DER, Buzzega et al. 2020,
with the old model as the teacher instead of stored logits). `distill` (strategies/distill.py) is
the classifier and agent version: it stores inputs with their old output distributions instead.

After each task the model is copied as the teacher. While the next task trains, the loss gains

    weight * T^2 * mean over tokens of KL(softmax(teacher / T) || softmax(student / T))

on one of three kinds of text (`source`):

- ``replay``: the stored windows that `token-replay` adds to each batch (compose them:
  `token-replay+lm-distill`); the student's logits for them come from the batch's own forward pass, so
  the cost is one teacher forward pass on the replayed rows;
- ``generated``: windows sampled from the teacher itself after each task (`generated_tokens` of them),
  so no old text is stored; costs one more student forward and backward per step. Each sample starts
  from a training window's first token (``start="window"``), at a line start (``start="line"``: the
  teacher writes whole lines, as it would begin one), or from a line start and the first word of one
  of the task's lines (``start="word"``: the teacher writes on what those lines are about, e.g. after
  an entity's name, in words of its own); ``keep_generated`` keeps every task's samples
  (the set grows by `generated_tokens` a task, each task's as its model wrote them right after
  learning it) instead of the last task's alone (pseudo-rehearsal: Robins 1995; for language models
  LAMOL, Sun et al. 2020, and self-synthesized rehearsal, Huang et al. 2024);
- ``new``: the current task's own batch (LwF): no stored text at all.

The teacher is state (its weights count in the stored bytes); `teacher_dtype="bf16"` halves it.

On replayed text each row can weigh differently, by the task it came from (for plasticity: the new
task's rows are never distilled, and these two make the teacher pull less on the others):
``age_decay`` multiplies a row's weight by ``age_decay ** age``, age = how many tasks ago its task
was learned (0: the task just before the current one; the teacher knows an older task only as well
as it still remembered it); ``first_weight``, when set, is the weight of task 0's rows instead (in
`lifelong.lm` runs task 0 is the general pre-training mixture, whose teacher pulls the model back
toward the pre-trained one, away from the format of what it learns next).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.lm import NEWLINE
from lifelong.data.task import Batch
from lifelong.strategies.base import Strategy, StrategyConfig

SOURCES = ("replay", "generated", "new")
STARTS = ("window", "line", "word")
SPACE = 32
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class LMDistillConfig(StrategyConfig):
    weight: float = 1.0  # of the distillation term, against the next-token loss's 1
    temperature: float = 1.0
    source: str = "replay"  # "replay" (compose with token-replay), "generated" or "new"
    generated_tokens: int = 32_768  # source "generated": tokens sampled from the teacher after each task
    generated_batch: int = 16  # source "generated": windows distilled on per step
    start: str = "window"  # source "generated": a sample starts from a window's first token, a newline ("line"),
    # or a newline and the first word of one of the task's lines ("word")
    keep_generated: bool = False  # source "generated": every task's samples kept, not only the last task's
    teacher_dtype: str = "fp32"  # or "bf16"
    age_decay: float = 1.0  # source "replay": a row's weight x age_decay ** (tasks since its task was learned)
    first_weight: float | None = None  # source "replay": task 0's rows' weight; None: as any other task's

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {self.source!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, not {self.start!r}")
        if self.teacher_dtype not in DTYPES:
            raise ValueError(f"teacher_dtype must be one of {tuple(DTYPES)}, not {self.teacher_dtype!r}")
        if self.weight < 0 or self.temperature <= 0 or self.generated_tokens < 0 or self.generated_batch < 1:
            raise ValueError("weight and generated_tokens must be >= 0, temperature > 0, generated_batch >= 1")
        if not 0 <= self.age_decay <= 1 or (self.first_weight is not None and self.first_weight < 0):
            raise ValueError("age_decay must be in [0, 1] and first_weight >= 0 (or None)")


def token_kl(student: Tensor, teacher: Tensor, temperature: float, rows: Tensor | None = None) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over tokens; with `rows` [N]
    (logits [N, L, V]), each row's mean KL weighted by it, over the N rows."""
    v = student.shape[-1]
    s = F.log_softmax(student.reshape(-1, v) / temperature, -1)
    t = F.log_softmax(teacher.reshape(-1, v).float() / temperature, -1)
    if rows is None:
        return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2
    per_row = F.kl_div(s, t, reduction="none", log_target=True).sum(-1).reshape(len(rows), -1).mean(1)
    return (per_row * rows).sum() / len(rows) * temperature ** 2


def line_words(x: Tensor, longest: int = 24) -> list[Tensor]:
    """Every newline in the windows `x` [N, L] with the first word after it, through its space (at
    most `longest` tokens; a word cut by its window's end is left out).

    >>> [bytes(p.tolist()) for p in line_words(torch.tensor([list(b"a\\nVorland has\\nQ: ")]))]
    [b'\\nVorland ', b'\\nQ: ']
    """
    out = []
    for row in x.long():
        for i in (row == NEWLINE).nonzero().flatten().tolist():
            ends = (row[i + 1:i + longest] == SPACE).nonzero()
            if len(ends):
                out.append(row[i:i + 2 + int(ends[0])].clone())
    return out


class LMDistill(Strategy):
    name = "lm-distill"

    @property
    def extra_forward(self) -> bool:  # type: ignore[override]
        """Generated text runs the student's own forward pass (outside DDP's); the other sources use
        the batch's logits and only the teacher (a separate module) runs again."""
        return self.config.source == "generated"

    def __init__(self, config: LMDistillConfig | None = None):
        self.config = config or LMDistillConfig()
        self.teacher: nn.Module | None = None
        self.teacher_state: dict[str, Tensor] | None = None
        self.generated: Tensor | None = None  # [n, L + 1] windows sampled from the teacher
        self.current = 0
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def before_task(self, model: nn.Module, task_id: int) -> None:
        self.current = task_id

    def after_task(self, model: nn.Module, task_id: int, batches: Iterable[Any]) -> None:
        dtype = DTYPES[self.config.teacher_dtype]
        self.teacher = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
        self.teacher_state = {k: v.detach().clone() for k, v in self.teacher.state_dict().items()}
        if self.config.source == "generated":
            new = self._generate(model, batches)
            keep = self.config.keep_generated and self.generated is not None
            self.generated = torch.cat([self.generated, new]) if keep else new  # type: ignore[list-item]

    def _generate(self, model: nn.Module, batches: Iterable[Any]) -> Tensor:
        """Windows of text sampled from the model (temperature 1), each started from the first
        token of one of the task's windows, from a newline (`start="line"`), or from a newline and the
        first word of one of the windows' lines (`start="word"`); every window is as long as the task's."""
        first = next(iter(batches))
        x = first[0] if not isinstance(first, Batch) else first.x
        length = x.shape[1] + 1
        count = max(1, self.config.generated_tokens // length)
        if self.config.start == "word":
            prompts = line_words(x, longest=min(24, length - 1))  # a prompt leaves room to write
            if prompts:
                picks = torch.randint(len(prompts), (count,), generator=self.generator).tolist()
                by_length: dict[int, list[Tensor]] = {}
                for i in picks:  # prompts of one length are sampled as one batch
                    by_length.setdefault(len(prompts[i]), []).append(prompts[i])
                out = torch.cat([model.generate(torch.stack(group).long(), length - n, temperature=1.0,  # type: ignore[operator]
                                                generator=self.generator) for n, group in sorted(by_length.items())])
                return out.to(x.dtype)
        if self.config.start == "window":
            starts = x[torch.randint(len(x), (count,), generator=self.generator), :1]
        else:  # "line", or "word" where the windows hold no whole first word of a line
            starts = torch.full((count, 1), NEWLINE, dtype=torch.long, device=x.device)
        out = model.generate(starts.long(), length - 1, temperature=1.0, generator=self.generator)  # type: ignore[operator]
        return out.to(x.dtype)

    def _teacher(self, model: nn.Module) -> nn.Module:
        if self.teacher is None:  # resumed from a state: rebuild the teacher from its saved weights
            dtype = DTYPES[self.config.teacher_dtype]
            self.teacher = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
            self.teacher.load_state_dict(self.teacher_state)  # type: ignore[arg-type]
        return self.teacher

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        cfg = self.config
        if self.teacher_state is None or cfg.weight == 0:
            return None
        if cfg.source == "generated":
            if self.generated is None or len(self.generated) == 0:
                return None
            idx = torch.randperm(len(self.generated), generator=self.generator)[: cfg.generated_batch]
            x = self.generated[idx, :-1]
            student = model(x)
        else:
            rows = batch.task != self.current if cfg.source == "replay" else batch.task == self.current
            if not bool(rows.any()):
                return None
            x, student = batch.x[rows], logits[rows]
            if cfg.source == "replay" and (cfg.age_decay != 1 or cfg.first_weight is not None):
                with torch.no_grad():
                    teacher = self._teacher(model)(x)
                return token_kl(student, teacher, cfg.temperature, self.row_weights(batch.task[rows]))
        with torch.no_grad():
            teacher = self._teacher(model)(x)
        return cfg.weight * token_kl(student, teacher, cfg.temperature)

    def row_weights(self, tasks: Tensor) -> Tensor:
        """Each replayed row's distillation weight, from the task it came from (`age_decay`, `first_weight`).

        >>> d = LMDistill(LMDistillConfig(weight=2.0, age_decay=0.5, first_weight=0.1))
        >>> d.current = 3
        >>> d.row_weights(torch.tensor([2, 1, 0])).tolist()
        [2.0, 1.0, 0.10000000149011612]
        """
        cfg = self.config
        weights = cfg.weight * cfg.age_decay ** (self.current - 1 - tasks).clamp(min=0).float()
        if cfg.first_weight is not None:
            weights = torch.where(tasks == 0, torch.full_like(weights, cfg.first_weight), weights)
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher_state, "generated": self.generated, "current": self.current,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher, self.teacher_state = None, state["teacher"]
        self.generated, self.current = state["generated"], int(state["current"])
        self.generator.set_state(state["generator"])
