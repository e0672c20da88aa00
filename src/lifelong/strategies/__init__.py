"""Strategies, registered by name. `build_strategy("ewc+replay", {...})` composes them.

>>> s = build_strategy("ewc+replay", {"strength": 300.0, "memory": 200})
>>> s.name, s.parts[0].config.strength, s.parts[1].config.memory
('ewc+replay', 300.0, 200)
"""

from __future__ import annotations

from typing import Any

from lifelong.strategies.agem import AGEM, AGEMConfig
from lifelong.strategies.base import Naive, NaiveConfig, Strategy, StrategyConfig
from lifelong.strategies.bias import WA, BiC, BiCConfig, WAConfig
from lifelong.strategies.compose import Compose
from lifelong.strategies.der import DER, DERACEConfig, DERConfig, DERPPConfig
from lifelong.strategies.distill import Distill, DistillConfig
from lifelong.strategies.er_ace import ERACE, ERACEConfig
from lifelong.strategies.ewc import EWC, EWCConfig, OnlineEWCConfig
from lifelong.strategies.gpm import GPM, GPMConfig
from lifelong.strategies.icarl import ICaRL, ICaRLConfig
from lifelong.strategies.joint import Joint, JointConfig
from lifelong.strategies.kfac_ewc import KFACEWC, KFACEWCConfig, OnlineKFACEWCConfig
from lifelong.strategies.lm_distill import LMDistill, LMDistillConfig
from lifelong.strategies.lwf import LwF, LwFConfig
from lifelong.strategies.mas import MAS, MASConfig
from lifelong.strategies.ncm import NCM, NCMConfig
from lifelong.strategies.olora import OLoRA, OLoRAConfig
from lifelong.strategies.quadratic import QuadraticPenalty
from lifelong.strategies.replay import Replay, ReplayConfig
from lifelong.strategies.si import SI, SIConfig
from lifelong.strategies.token_replay import TokenReplay, TokenReplayConfig

# name -> (config class, strategy class); explicit, no discovery.
REGISTRY: dict[str, tuple[type[StrategyConfig], type[Strategy]]] = {
    "naive": (NaiveConfig, Naive),
    "joint": (JointConfig, Joint),
    "replay": (ReplayConfig, Replay),
    "ewc": (EWCConfig, EWC),
    "online-ewc": (OnlineEWCConfig, EWC),
    "kfac-ewc": (KFACEWCConfig, KFACEWC),  # Kronecker-factored Fisher blocks per layer
    "online-kfac-ewc": (OnlineKFACEWCConfig, KFACEWC),
    "gpm": (GPMConfig, GPM),  # gradients projected off each layer's earlier input subspace
    "olora": (OLoRAConfig, OLoRA),  # a LoRA adapter per task, orthogonal to the earlier ones, folded after it
    "si": (SIConfig, SI),
    "mas": (MASConfig, MAS),
    "lwf": (LwFConfig, LwF),
    "agem": (AGEMConfig, AGEM),
    "der": (DERConfig, DER),
    "der++": (DERPPConfig, DER),
    "der-ace": (DERACEConfig, DER),  # DER++ whose new-batch loss covers the current classes only (ER-ACE)
    "er-ace": (ERACEConfig, ERACE),
    "icarl": (ICaRLConfig, ICaRL),
    "ncm": (NCMConfig, NCM),
    "wa": (WAConfig, WA),  # bias corrections: compose them with a replay method (replay+wa, der++ +bic)
    "bic": (BiCConfig, BiC),
    "distill": (DistillConfig, Distill),  # distil the earlier outputs on stored inputs (control: ClonEx / P&C)
    # language models (lifelong.lm): replay of a token budget, distillation from the previous model
    "token-replay": (TokenReplayConfig, TokenReplay),
    "lm-distill": (LMDistillConfig, LMDistill),
}
STRATEGIES = (*REGISTRY, "ewc+replay", "kfac-ewc+replay")
LANGUAGE_ONLY = ("token-replay", "lm-distill")  # they need language-model windows and a GPT (lifelong.lm)
LORA_ONLY = ("olora",)  # needs a model with peft LoRA adapters (--encoder lora); tests/test_olora.py


def split_name(name: str) -> list[str]:
    """'ewc+der++' -> ['ewc', 'der++']: registered names, longest first, joined by '+'."""
    parts, rest = [], "".join(name.split())  # "der++ +bic" and "der+++bic" are the same
    names = sorted(REGISTRY, key=len, reverse=True)
    while rest:
        match = next((n for n in names if rest.startswith(n) and rest[len(n):len(n) + 1] in ("", "+")), None)
        if match is None:
            head = rest.split("+", 1)[0]
            raise ValueError(f"unknown strategy {head!r}; choose from {', '.join(REGISTRY)} "
                             "or combine them with '+' (e.g. ewc+replay)")
        parts.append(match)
        rest = rest[len(match) + 1:]
    return parts


def strategy_options(name: str) -> dict[str, dict[str, Any]]:
    """The default config of each part of a (possibly composed) strategy name."""
    parts = split_name(name)
    if len(set(parts)) != len(parts):
        raise ValueError(f"a strategy appears twice in {name!r}")
    unknown = [p for p in parts if p not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown strategy {'+'.join(unknown)!r}; choose from {', '.join(REGISTRY)} "
                         "or combine them with '+' (e.g. ewc+replay)")
    return {p: REGISTRY[p][0]().to_dict() for p in parts}


def option_names(name: str) -> set[str]:
    """Every option some part of a (possibly composed) strategy name takes."""
    return {k for part in strategy_options(name).values() for k in part}


def strategy_config(strategy: Strategy) -> dict[str, dict[str, Any]]:
    """Every option of every part of a built strategy, defaults included (what a result records)."""
    parts = getattr(strategy, "parts", [strategy])
    return {p.name: p.config.to_dict() for p in parts if getattr(p, "config", None) is not None}


def protection(strategy: Strategy) -> dict[str, list[dict[str, Any]]]:
    """What each part of a strategy that reports it (kfac-ewc, gpm) protects, per layer, by part name."""
    return {p.name: p.protection() for p in getattr(strategy, "parts", [strategy])
            if hasattr(p, "protection")}


def build_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """Build a strategy from its name and a flat dict of options.

    Each part takes the options its config defines (`strength` goes to EWC, `memory` to replay);
    an option no part defines is an error.
    """
    options = dict(options or {})
    defaults = strategy_options(name)
    if "bic" in defaults and "memory" in options and "holdout" not in options:
        # `memory` is the whole budget: BiC's held-out tenth comes out of it
        options["holdout"] = max(1, int(options["memory"]) // 10)
        options["memory"] = int(options["memory"]) - options["holdout"]
    unused = set(options) - {k for d in defaults.values() for k in d}
    if unused:
        raise ValueError(f"strategy {name!r} takes no option(s) {sorted(unused)}")
    order = sorted(defaults, key=lambda p: p != "bic")  # BiC takes its held-out samples before replay sees the batch
    parts = []
    for part in order:
        fields = defaults[part]
        config_cls, strategy_cls = REGISTRY[part]
        config = config_cls.from_dict({**fields, **{k: v for k, v in options.items() if k in fields}})
        parts.append(strategy_cls(config))  # type: ignore[call-arg]
    return parts[0] if len(parts) == 1 else Compose(parts)


__all__ = [
    "AGEM",
    "DER",
    "ERACE",
    "EWC",
    "GPM",
    "KFACEWC",
    "LANGUAGE_ONLY",
    "LORA_ONLY",
    "MAS",
    "NCM",
    "REGISTRY",
    "SI",
    "STRATEGIES",
    "WA",
    "BiC",
    "Compose",
    "Distill",
    "EWCConfig",
    "GPMConfig",
    "ICaRL",
    "Joint",
    "KFACEWCConfig",
    "LMDistill",
    "LMDistillConfig",
    "LwF",
    "MASConfig",
    "Naive",
    "OLoRA",
    "OLoRAConfig",
    "QuadraticPenalty",
    "Replay",
    "ReplayConfig",
    "SIConfig",
    "Strategy",
    "TokenReplay",
    "TokenReplayConfig",
    "build_strategy",
    "option_names",
    "protection",
    "split_name",
    "strategy_config",
    "strategy_options",
]
