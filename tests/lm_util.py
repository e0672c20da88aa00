"""Helpers of the language-model tests: whether WordNet's text is here, random text windows, a tiny run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lifelong.data.lm import LMDataConfig, sample_windows, window_dataset
from lifelong.data.task import Batch
from lifelong.lm.run import LMRunConfig, run_lm

_snapshots = os.environ.get("LIFELONG_CORPORA")
needs_wordnet = pytest.mark.skipif(
    not Path(os.environ.get("LIFELONG_WORDNET", "/usr/share/wordnet"), "data.noun").exists()
    and not (_snapshots and Path(_snapshots, "wordnet-4000000.pt.gz").exists()),
    reason="WordNet not installed: run scripts/ensure-text-data.sh")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def windows(n: int = 12, length: int = 8, seed: int = 0) -> Batch:
    """`n` windows of `length` random bytes, as one batch of task 0."""
    text = torch.randint(0, 256, (4000,), generator=torch.Generator().manual_seed(seed), dtype=torch.long)
    w = sample_windows(text.to(torch.uint8), n, length, torch.Generator().manual_seed(seed))
    ds = window_dataset(w)
    return Batch(ds.x, ds.y, torch.zeros(n, dtype=torch.long))


def tiny_run(strategy: str, options: dict[str, Any], benchmark: str = "text-domains", device: str = "cpu",
             optimizer: str = "adam", **data: Any) -> dict[str, Any]:
    """A run of gpt-0.2m through the general mixture and two domains, a few steps each."""
    data = {"pretrain_steps": 6, "steps": 4, "batch_size": 4, "length": 32, "eval_windows": 4, **data}
    cfg = LMRunConfig(benchmark, "gpt-0.2m", strategy, options, LMDataConfig(**data),
                      domains=("python-code", "wordnet"), importance_batch=4, device=device, optimizer=optimizer)
    return run_lm(cfg)
