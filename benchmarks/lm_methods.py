"""What `benchmarks/lm.py` runs: its settings (data and sizes), its methods (a strategy with options), the
options chosen on validation (results/tuning/lm-*.json) and the rule that chooses them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from lifelong.data.facts import FactsConfig
from lifelong.data.lm import LMDataConfig
from lifelong.models.gpt import PRESETS

TUNING = Path(__file__).resolve().parent.parent / "results" / "tuning"

SETTINGS: dict[str, dict[str, Any]] = {
    "probe": {"benchmark": "text-domains", "data": LMDataConfig(pretrain_steps=0, steps=300, batch_size=32),
              "sizes": ["gpt-1m"]},
    "domains": {"benchmark": "text-domains", "data": LMDataConfig(pretrain_steps=600, steps=150, batch_size=16),
                "sizes": ["gpt-0.2m", "gpt-1m", "gpt-4m"]},
    # half of the facts setting's pre-training is background facts, so that the question forms are known
    "facts": {"benchmark": "facts",
              "data": LMDataConfig(pretrain_steps=600, steps=120, batch_size=16, general_facts=0.5,
                                   facts=FactsConfig(batches=10, entities_per_batch=4, background_entities=100)),
              "sizes": ["gpt-1m"]},
}
# twice the steps on each fact batch, for every method alike (the same data and pre-trained model; steps are
# not in the pre-training key); its options are facts' choices unless its own validation chose otherwise
SETTINGS["facts-long"] = {**SETTINGS["facts"], "data": replace(SETTINGS["facts"]["data"],
                                                               steps=2 * SETTINGS["facts"]["data"].steps),
                          "tuned_as": "facts"}
# twice the facts a batch (8 entities: 40 facts, 80 test questions) at facts-long's steps per fact (480 a
# batch): each batch read on twice the questions, to tell a reading's noise from loss in the per-batch target
_long = SETTINGS["facts-long"]["data"]
# Its validation learns fact batches of its own, asked in the test's forms (`valid_facts`), so that tuning
# sees the entity-first form the test asks; the test runs are the same with or without it.
SETTINGS["facts-wide"] = {**SETTINGS["facts-long"], "data": replace(
    _long, steps=2 * _long.steps, facts=replace(_long.facts, entities_per_batch=2 * _long.facts.entities_per_batch)),
    "valid_facts": True}
# name -> (strategy, options). Values chosen on validation (results/tuning/lm-*.json) override these.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "naive": ("naive", {}),
    "joint": ("joint", {}),
    "ewc": ("ewc", {"strength": 1.0, "samples": 128}),
    "online-ewc": ("online-ewc", {"strength": 1.0, "samples": 128, "gamma": 0.9}),
    # issue 18's methods beyond the diagonal (they run on a GPT: tests/test_lm.py)
    "kfac-ewc": ("kfac-ewc", {"strength": 1.0, "samples": 128}),
    "online-kfac-ewc": ("online-kfac-ewc", {"strength": 1.0, "samples": 128}),
    "online-kfac-ewc+replay": ("online-kfac-ewc+token-replay", {"strength": 1.0, "samples": 128, "replay": 0.01}),
    "gpm": ("gpm", {"samples": 128}),
    "replay": ("token-replay", {"replay": 0.01}),
    # LoRA on the GPT (lifelong.lm.lora): `lora` is the adapters' rank (LMRunConfig.lora_rank), not a
    # strategy option; the pre-trained GPT is frozen and only the adapters train, in every LoRA method
    "lora": ("naive", {"lora": 8}),  # sequential LoRA: one adapter trained through every task
    "lora-ewc": ("ewc", {"lora": 8, "strength": 1.0, "samples": 128}),  # EWC on the adapters
    "olora": ("olora", {"lora": 8, "mode": "project"}),  # an adapter per task, orthogonal, folded after it
    "lora-fold": ("olora", {"lora": 8, "mode": "loss", "orth_weight": 0.0}),  # olora without orthogonality
    "lora+replay": ("token-replay", {"lora": 8, "replay": 0.01}),
    "lora-ewc+replay": ("ewc+token-replay", {"lora": 8, "strength": 1.0, "samples": 128, "replay": 0.01}),
    "ewc+replay": ("ewc+token-replay", {"strength": 1.0, "samples": 128, "replay": 0.01}),
    "distill+replay": ("token-replay+lm-distill", {"replay": 0.01, "weight": 1.0}),
    "distill-generated": ("lm-distill", {"source": "generated", "replay": 0.01, "weight": 1.0}),
    "ewc+distill+replay": ("ewc+token-replay+lm-distill", {"strength": 1.0, "samples": 128, "replay": 0.01,
                                                         "weight": 1.0}),
}


# a composition takes the options chosen for its parts (as benchmarks/tune.py does for the other benchmarks)
# (the LoRA methods take the adapters' rank chosen for sequential LoRA, `lora`: one LoRA model for them all)
TUNED_FROM = {"ewc+replay": ["ewc"], "online-kfac-ewc+replay": ["online-kfac-ewc"],
              "ewc+distill+replay": ["ewc", "distill+replay"], "lora+replay": ["lora"],
              "lora-ewc": ["lora", "lora-ewc"], "olora": ["lora", "olora"], "lora-fold": ["lora", "lora-fold"],
              "lora-ewc+replay": ["lora", "lora-ewc"]}
# nothing stored, everything stored, or the control itself
NO_EQUAL_BYTES = ("naive", "joint", "replay", "lora", "lora+replay")
# the reference whose learning accuracy the choice must stay near (a LoRA method: sequential LoRA)
BASELINE = {"lora-ewc": "lora", "olora": "lora", "lora-fold": "lora", "lora-ewc+replay": "lora"}
PLASTICITY_FLOOR = 0.05  # a choice's learning accuracy within 5 points of naive's, as in benchmarks/tune.py
PLASTICITY_GAIN = 0.5  # ... and at least half of what the baseline learns above the untouched model


def plasticity_floor(baseline_learning: float, untouched: float | None) -> float:
    """The least learning accuracy `choose` accepts: within PLASTICITY_FLOOR of the baseline's and, where
    the untouched (pre-trained) model's score is known, at least PLASTICITY_GAIN of the baseline's gain
    over it. The second bound binds only where the baseline itself learns little (LoRA adapters learn
    0.06 above the untouched gpt-1m): there 5 points is most of the learning, and a penalty that keeps
    the adapters where they started would pass it, keeping everything of nothing."""
    floor = baseline_learning - PLASTICITY_FLOOR
    if untouched is None:
        return floor
    return max(floor, untouched + PLASTICITY_GAIN * (baseline_learning - untouched))


def _budget(data: LMDataConfig, share: float, domains: int) -> int:
    """`share` of every token the run trains on (general mixture and every later task)."""
    windows = (data.pretrain_steps + domains * data.steps) * data.batch_size
    return int(share * windows * (data.length + 1))


def _tuning_file(setting: str, size: str, method: str) -> Path | None:
    """results/tuning/lm-<setting>-<size>-<method>.json, else the one of the nearest smaller size tuned
    (any preset: a size run without its own tuning takes the choice of the largest tuned below it);
    a setting with no tuning of its own at any of those sizes takes that of the setting it is `tuned_as`."""
    presets = list(PRESETS)
    candidates = list(reversed(presets[: presets.index(size) + 1])) if size in presets else [size]
    for name in dict.fromkeys([setting, SETTINGS[setting].get("tuned_as", setting)]):
        for s in candidates:
            path = TUNING / f"lm-{name}-{s}-{method}.json"
            if path.exists():
                return path
    return None


def tuned_options(setting: str, size: str, method: str) -> dict[str, Any]:
    """The options validation chose for `method` (its tuning file's), {} where none was tuned."""
    tuned = _tuning_file(setting, size, method)
    return json.loads(tuned.read_text())["chosen"] if tuned is not None else {}


def _options(setting: str, size: str, method: str, extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A method's strategy and options: its defaults, then what validation chose for it (and for the parts
    it is tuned from), then `extra`, with a replay share turned into tokens."""
    strategy, options = METHODS[method]
    options = dict(options)
    for part in TUNED_FROM.get(method, [method]):
        options.update(tuned_options(setting, size, part))
    options.update(extra)
    s = SETTINGS[setting]
    domains = s["data"].facts.batches if s["benchmark"] == "facts" else 4
    if "replay" in options:  # a share of the text -> tokens (generated text for distill's own source)
        tokens = _budget(s["data"], float(options.pop("replay")), domains)
        options["generated_tokens" if strategy == "lm-distill" else "tokens"] = tokens
    return strategy, options
