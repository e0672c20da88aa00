"""CLINC150 intent classification as a task stream: one task per domain of 15 intents.

The data is read from a folder holding `data_full.json` (or `data_full.json.gz`) and `domains.json`:
`--data-dir`, else $LIFELONG_CLINC150, else the data folder's clinc150/ ($LIFELONG_DATA/clinc150,
where `lifelong data fetch clinc150` puts it), else `shared/datasets/clinc150` beside the repository
when that exists. It is never copied into the repository.

Texts become tensors through a `featurize` function given by the caller: sentence embeddings of a
frozen encoder (cached on disk), or token ids for an encoder that is fine-tuned.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lifelong.data.task import ArrayDataset, Task, TaskStream
from lifelong.data.vision import DataError, class_order

Featurize = Callable[[Sequence[str]], Tensor]
_HINT = ("CLINC150 (Larson et al. 2019, CC BY 3.0) is not bundled; run `lifelong data fetch clinc150`, or point "
         "--data-dir or LIFELONG_CLINC150 at a folder holding data_full.json (or .json.gz) and domains.json (the "
         "'full' split of https://github.com/clinc/oos-eval and its domain -> intents map)")


def clinc150_dir(path: str | os.PathLike | None = None) -> Path:
    """Where CLINC150 is read from (the first that is given or exists)."""
    from lifelong.data.registry import data_root

    if path or os.environ.get("LIFELONG_CLINC150"):
        return Path(path or os.environ["LIFELONG_CLINC150"])
    if (data_root() / "clinc150").is_dir():
        return data_root() / "clinc150"
    repo = Path(__file__).resolve().parents[3]
    beside = [repo.parent, Path.cwd().parent, repo]  # the checkout's neighbour, the working folder's, its own
    for candidate in (root / "shared" / "datasets" / "clinc150" for root in beside):
        if candidate.exists():
            return candidate
    raise DataError(f"CLINC150 not found beside the repository. {_HINT}")


@dataclass(frozen=True)
class Clinc150:
    """The raw data: (text, intent) pairs per split, and the domains in their fixed order."""

    splits: dict[str, list[tuple[str, str]]]
    domains: dict[str, list[str]]

    @property
    def intents(self) -> list[str]:
        """All 150 intents, domain by domain: an intent's label id is its index here."""
        return [i for d in self.domains.values() for i in d]


def load_clinc150(path: str | os.PathLike | None = None) -> Clinc150:
    root = clinc150_dir(path)
    data_file, domains_file = root / "data_full.json", root / "domains.json"
    if not data_file.exists() and data_file.with_suffix(".json.gz").exists():
        data_file = data_file.with_suffix(".json.gz")
    for f in (data_file, domains_file):
        if not f.exists():
            raise DataError(f"{f} does not exist. {_HINT}")
    try:
        opener = gzip.open if data_file.suffix == ".gz" else open
        with opener(data_file, "rt", encoding="utf-8") as fh:
            raw = json.load(fh)
        domains = json.loads(domains_file.read_text(encoding="utf-8"))
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"CLINC150 files in {root} are corrupt ({exc}). {_HINT}") from exc
    needed = {"train", "val", "test", "oos_test"}
    if not needed <= set(raw) or len(domains) != 10:
        raise DataError(f"{data_file} lacks splits {sorted(needed - set(raw))} or domains.json does not list "
                        f"10 domains. {_HINT}")
    splits = {k: [(str(t), str(i)) for t, i in v] for k, v in raw.items()}
    known = {i for d in domains.values() for i in d}
    unknown = {i for k in ("train", "val", "test") for _, i in splits[k]} - known
    if unknown:
        raise DataError(f"{data_file} has intents that domains.json does not list: {sorted(unknown)[:5]}")
    return Clinc150(splits, domains)


def clinc150_stream(data: Clinc150, featurize: Featurize, scenario: str = "task", num_tasks: int = 10,
                    order: str = "fixed", seed: int = 0, per_intent: int | None = None,
                    name: str = "clinc150") -> TaskStream:
    """Task k holds the k-th domain's 15 intents (task-IL: one 15-way head each; class-IL: one 150-way
    head). `order="random"` shuffles the domains by the seed; `per_intent` keeps only the first N
    training queries of each intent (small slices for tests). (The out-of-scope test queries, which
    belong to no intent, are in `data.splits["oos_test"]`.)"""
    if scenario not in ("task", "class"):
        raise ValueError(f"CLINC150 streams are task- or class-incremental, not {scenario!r}")
    if not 1 <= num_tasks <= len(data.domains):
        raise ValueError(f"CLINC150 has {len(data.domains)} domains; asked for {num_tasks}")
    label = {intent: i for i, intent in enumerate(data.intents)}
    domain_names = list(data.domains)
    chosen = [domain_names[i] for i in class_order(len(domain_names), order, seed)][:num_tasks]

    def part(split: str, intents: set[str], limit: int | None) -> ArrayDataset:
        kept: dict[str, int] = {}
        texts, labels = [], []
        for text, intent in data.splits[split]:
            if intent in intents and (limit is None or kept.get(intent, 0) < limit):
                kept[intent] = kept.get(intent, 0) + 1
                texts.append(text)
                labels.append(label[intent])
        return ArrayDataset(featurize(texts), torch.tensor(labels))

    tasks = []
    for k, domain in enumerate(chosen):
        intents = set(data.domains[domain])
        valid_limit = None if per_intent is None else max(1, per_intent // 5)
        tasks.append(Task(k, part("train", intents, per_intent), part("test", intents, None),
                          tuple(label[i] for i in data.domains[domain]), domain, part("val", intents, valid_limit)))
    return TaskStream(tasks, len(label), scenario, name, data.intents)
