"""Continual language-modelling streams: windows of byte text as tasks.

A task's data is an `ArrayDataset` of windows: inputs x [N, L] (uint8 bytes) and targets y [N, L]
(the same text shifted by one byte), so the learner's batches, replay and importance treat them like
any other dataset. Task 0 is always the *general mixture* (pre-training); later tasks are domains
(`text_domains_stream`) or batches of new facts (`facts_stream`).

Your own text: `read_text` (a file, or a folder's files) and `text_stream` (one task per named text,
each split into train / valid / test by position) make the same kind of stream, without pre-training.

- Training windows are drawn at random offsets (seeded), `steps * batch_size` of them, so one epoch is
  exactly `steps` optimizer steps;
- evaluation windows are fixed, evenly spaced over the held-out split (the same for every run).

The general mixture draws its windows from every source's general split (documentation of the
installed Debian packages, and a share of each domain's sources) plus the background facts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lifelong.data.corpora import Corpus, decode, encode, load_corpus
from lifelong.data.facts import Fact, FactsConfig, FactWorld
from lifelong.data.task import ArrayDataset, Task, TaskStream

DOMAINS = ("python-code", "python-docs", "wordnet", "clinc150")


def sample_windows(text: Tensor, count: int, length: int, generator: torch.Generator) -> Tensor:
    """`count` windows of length + 1 bytes at random offsets of `text` (uint8 [count, length + 1])."""
    if text.numel() <= length + 1:
        raise ValueError(f"text of {text.numel()} bytes is too short for windows of {length + 1}")
    starts = torch.randint(0, text.numel() - length - 1, (count,), generator=generator)
    return text[starts.unsqueeze(1) + torch.arange(length + 1)]


def spaced_windows(text: Tensor, count: int, length: int) -> Tensor:
    """`count` windows spread evenly over `text` (fixed: the same evaluation set every time)."""
    if text.numel() <= length + 1:
        raise ValueError(f"text of {text.numel()} bytes is too short for windows of {length + 1}")
    starts = torch.linspace(0, text.numel() - length - 1, count).long()
    return text[starts.unsqueeze(1) + torch.arange(length + 1)]


def window_dataset(windows: Tensor) -> ArrayDataset:
    """Windows [N, L + 1] as (x = first L bytes, y = last L bytes) pairs."""
    return ArrayDataset(windows[:, :-1].contiguous(), windows[:, 1:].long())


def mixture_windows(texts: Sequence[Tensor], weights: Sequence[float], count: int, length: int,
                    generator: torch.Generator) -> Tensor:
    """Windows drawn from several texts in proportion to `weights`, then shuffled."""
    total = sum(weights)
    counts = [round(count * w / total) for w in weights]
    counts[0] += count - sum(counts)
    parts = [sample_windows(t, k, length, generator) for t, k in zip(texts, counts, strict=True) if k > 0]
    windows = torch.cat(parts)
    return windows[torch.randperm(len(windows), generator=generator)]


@dataclass(frozen=True)
class LMDataConfig:
    """What the text streams are made of (shared by `text-domains` and `facts`)."""

    length: int = 128  # bytes per window (the model's context)
    batch_size: int = 16
    pretrain_steps: int = 1000  # general-mixture steps (task 0); 0 skips pre-training
    steps: int = 250  # steps per later task
    eval_windows: int = 64  # held-out windows per task and split
    max_bytes: int = 4_000_000  # per source and split
    general_facts: float = 0.1  # share of the general mixture that is background facts
    seed: int = 0
    clinc150_dir: str | None = None
    facts: FactsConfig = field(default_factory=FactsConfig)

    def __post_init__(self) -> None:
        if min(self.length, self.batch_size, self.steps, self.eval_windows) < 1 or self.pretrain_steps < 0:
            raise ValueError("length, batch_size, steps and eval_windows must be >= 1, pretrain_steps >= 0")
        if not 0 <= self.general_facts < 1:
            raise ValueError(f"general_facts must be in [0, 1), not {self.general_facts}")

    def to_dict(self) -> dict[str, Any]:
        """The fields, less `facts.valid_facts` when it is off: it came later, and runs saved before it
        (which it would not have changed) keep their configuration, so `--resume` still finds them."""
        from dataclasses import asdict

        out = asdict(self)
        if not self.facts.valid_facts:
            del out["facts"]["valid_facts"]
        return out


_CORPORA: dict[tuple[str, int, str | None], Corpus] = {}


def corpus(name: str, config: LMDataConfig) -> Corpus:
    """A source's corpus, read once per process."""
    key = (name, config.max_bytes, config.clinc150_dir)
    if key not in _CORPORA:
        _CORPORA[key] = load_corpus(name, config.max_bytes, config.clinc150_dir or os.environ.get("LIFELONG_CLINC150"))
    return _CORPORA[key]


def general_task(config: LMDataConfig, generator: torch.Generator, domains: Sequence[str] = DOMAINS) -> Task:
    """Task 0: the general mixture. Half of it is Debian documentation, the rest the domains' general
    shares in equal parts and the background facts; its held-out parts come from the text sources."""
    sources = ["debian-docs", *domains]
    world = FactWorld(config.facts)
    texts = [corpus(s, config).splits["general"] for s in sources] + [encode(world.background_text())]
    text_share = 1 - config.general_facts
    weights = [0.5 * text_share] + [0.5 * text_share / len(domains)] * len(domains) + [config.general_facts]
    train = mixture_windows(texts, weights, max(config.pretrain_steps, 1) * config.batch_size, config.length,
                            generator)

    def held_out(split: str) -> ArrayDataset:
        per = [spaced_windows(corpus(s, config).splits[split], config.eval_windows // len(sources) + 1,
                              config.length) for s in sources]
        return window_dataset(torch.cat(per)[: config.eval_windows])

    return Task(0, window_dataset(train), held_out("general-test"), (), "general", held_out("general-valid"))


def text_domains_stream(config: LMDataConfig | None = None, domains: Sequence[str] = DOMAINS) -> TaskStream:
    """Task 0 the general mixture, then one task per domain (its own documents' train/valid/test).

    >>> s = text_domains_stream(LMDataConfig(pretrain_steps=2, steps=3, batch_size=4, eval_windows=5),
    ...                         domains=("python-code",))
    >>> [t.name for t in s], len(s[1].train), s[1].train.x.shape[1]
    (['general', 'python-code'], 12, 128)
    """
    config = config or LMDataConfig()
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; choose from {', '.join(DOMAINS)}")
    generator = torch.Generator().manual_seed(config.seed)
    tasks = [general_task(config, generator, domains)]
    for k, name in enumerate(domains, start=1):
        splits = corpus(name, config).splits
        train = sample_windows(splits["train"], config.steps * config.batch_size, config.length, generator)
        tasks.append(Task(k, window_dataset(train), window_dataset(spaced_windows(splits["test"], config.eval_windows,
                                                                                  config.length)),
                          (), name, window_dataset(spaced_windows(splits["valid"], config.eval_windows,
                                                                  config.length))))
    return TaskStream(tasks, 256, "domain", "text-domains")


class FactEvaluator:
    """Exact match on a fact batch's held-out questions: greedy generation after "A:" up to the end of
    the line, compared with " " + the value. Prompts of one length run as one batch."""

    def __init__(self, facts: Sequence[Fact], max_new_tokens: int = 24):
        self.facts, self.max_new_tokens = list(facts), max_new_tokens

    def answers(self, model: Any, split: str) -> list[tuple[str, str, str]]:
        """(prompt, expected, generated) for every question of the split."""
        asked = [(q, f.value) for f in self.facts for q in FactWorld.question(f, split)]
        by_length: dict[int, list[tuple[str, str, Tensor]]] = {}
        for prompt, value in asked:
            tokens = encode("\n" + prompt)
            by_length.setdefault(len(tokens), []).append((prompt, value, tokens))
        out = []
        for group in by_length.values():
            idx = torch.stack([t for _, _, t in group])
            generated = model.generate(idx, self.max_new_tokens, temperature=0, stop=NEWLINE)[:, idx.shape[1]:]
            for (prompt, value, _), row in zip(group, generated, strict=True):
                out.append((prompt, value, decode(row).split("\n", 1)[0]))
        return out

    def __call__(self, model: Any, task_id: int, split: str) -> float:
        answers = self.answers(model, split)
        return sum(generated == " " + value for _, value, generated in answers) / len(answers)


NEWLINE = 10


def facts_stream(config: LMDataConfig | None = None, repeats: int = 20,
                 domains: Sequence[str] = DOMAINS, split: str = "test") -> TaskStream:
    """Task 0 the general mixture (it holds the background facts), then one task per fact batch:
    training windows over its taught lines (shuffled, `repeats` times over), scored by `FactEvaluator`.
    The batches are `split`'s (`FactWorld.stream`: validation's own in a `valid_facts` world).

    >>> s = facts_stream(LMDataConfig(pretrain_steps=1, steps=2, batch_size=4, eval_windows=5,
    ...                               facts=FactsConfig(batches=2, entities_per_batch=2, background_entities=3)),
    ...                  domains=("python-code",))
    >>> [t.name for t in s], len(s[2].train)
    (['general', 'facts-1', 'facts-2'], 8)
    """
    config = config or LMDataConfig()
    generator = torch.Generator().manual_seed(config.seed)
    world = FactWorld(config.facts)
    tasks = [general_task(config, generator, domains)]
    for k, batch in enumerate(world.stream(split), start=1):
        lines = [line for f in batch for line in world.taught(f)]
        rounds = []
        for _ in range(repeats):
            order = torch.randperm(len(lines), generator=generator).tolist()
            rounds.append("\n".join(lines[i] for i in order))
        text = encode("\n" + "\n".join(rounds) + "\n")
        train = sample_windows(text, config.steps * config.batch_size, config.length, generator)
        tasks.append(Task(k, window_dataset(train), None, (), f"facts-{k}", None, FactEvaluator(batch)))
    return TaskStream(tasks, 256, "domain", "facts")


def read_text(path: str | os.PathLike) -> bytes:
    """A file's bytes, or a folder's text files joined by blank lines: every file below it in sorted path
    order, less hidden ones and those that are not UTF-8 (compiled `.pyc`, images: bytes of no language)."""
    root = Path(path)
    if root.is_file():
        return root.read_bytes()
    if not root.is_dir():
        raise FileNotFoundError(f"no file or folder {root}")
    parts = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in file.relative_to(root).parts):
            continue
        raw = file.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        parts.append(raw)
    if not parts:
        raise ValueError(f"folder {root} has no UTF-8 text files")
    return b"\n\n".join(parts)


def text_stream(texts: Mapping[str, bytes | str], config: LMDataConfig | None = None,
                held_out: float = 0.1) -> TaskStream:
    """One task per named text, in the mapping's order: its first `1 - held_out` of the bytes train (windows
    at random offsets, `config.steps * config.batch_size` of them), the rest is cut in two halves, valid
    then test (evenly spaced windows). Split by position, so no held-out window overlaps a trained one.

    >>> s = text_stream({"a": "x" * 3000, "b": "y" * 3000}, LMDataConfig(length=32, steps=2, batch_size=4))
    >>> [t.name for t in s], s[1].train.x.shape, len(s[1].test)
    (['a', 'b'], torch.Size([8, 32]), 64)
    """
    config = config or LMDataConfig()
    if not texts:
        raise ValueError("text_stream needs at least one text")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), not {held_out}")
    generator = torch.Generator().manual_seed(config.seed)
    tasks = []
    for k, (name, text) in enumerate(texts.items()):
        data = encode(text) if isinstance(text, str) else torch.frombuffer(bytearray(text), dtype=torch.uint8)
        cut = int(data.numel() * (1 - held_out))
        middle = cut + (data.numel() - cut) // 2
        train, valid, test = data[:cut], data[cut:middle], data[middle:]
        least = config.length + 2
        if min(train.numel(), valid.numel(), test.numel()) < least:
            raise ValueError(f"text {name!r} has {data.numel():,} bytes: too short for windows of {least - 1} bytes "
                             f"in each of train, valid and test (held_out={held_out}); give it at least "
                             f"{int(2 * least / held_out) + 1:,} bytes, or a shorter window length")
        windows = sample_windows(train, config.steps * config.batch_size, config.length, generator)
        tasks.append(Task(k, window_dataset(windows), window_dataset(spaced_windows(test, config.eval_windows,
                                                                                   config.length)),
                          (), name, window_dataset(spaced_windows(valid, config.eval_windows, config.length))))
    return TaskStream(tasks, 256, "domain", "own-text")
