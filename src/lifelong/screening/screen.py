"""The layers together: `screen` a batch's features, `screen_model` with a model's representations,
and `training_data`, the part of a screened batch an update may train on."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.screening.backdoor import backdoor_outliers
from lifelong.screening.base import Hold, ScreenConfig, ScreenResult
from lifelong.screening.collisions import label_collisions
from lifelong.screening.guards import guard_agreement
from lifelong.screening.labels import estimate_labels, label_noise
from lifelong.screening.representation import input_features
from lifelong.screening.sources import cap_source_share, source_outliers


def screen(features: Tensor, labels: Sequence[str], sources: Sequence[str | None] | None = None,
           probs: Tensor | None = None, known: Sequence[str] | None = None,
           reference: tuple[Tensor, Sequence[str]] | None = None, config: ScreenConfig | None = None,
           ids: Sequence[Any] | None = None, inputs: Tensor | None = None,
           input_reference: Tensor | None = None) -> ScreenResult:
    """Run the enabled screens on one feedback batch and return what to hold and why.

    `features` [n, d]: the current model's penultimate features of the examples; `labels`: their
    labels (names); `sources`: who sent each (the API key id; None: unknown); `probs` [n, K]: the
    model's softmax over the labels it has learned, named by `known` (K names); `reference`: trusted
    labelled examples (features, label names), e.g. the guard sets; `ids`: the feedback ids (default
    positions); `inputs` [n, ...] and `input_reference`: the same examples and reference rows as model
    inputs, for the label-collision screen's input space. The label-collision screen judges every
    example, not only what the other screens kept. Exempt sources' examples are never held."""
    cfg = config or ScreenConfig()
    n = len(labels)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows for {n} labels")
    if probs is not None and (known is None or probs.shape != (n, len(known))):
        raise ValueError("probs must be [n, len(known)] with `known` naming its columns")
    sources = list(sources) if sources is not None else [None] * n
    if len(sources) != n:
        raise ValueError(f"{len(sources)} sources for {n} labels")
    ids = list(range(n)) if ids is None else list(ids)
    started = time.perf_counter()
    holds: list[Hold] = []
    if cfg.source_limits:
        holds += cap_source_share(sources, cfg.max_source_share, cfg.min_sources, cfg.exempt_sources, ids)
    if cfg.label_noise or cfg.source_outliers:
        estimate = estimate_labels(features, labels, sources, probs, known, reference, cfg)
        if cfg.label_noise:
            holds += label_noise(features, labels, sources, probs, known, reference, cfg, ids, estimate)
        if cfg.source_outliers:
            holds += source_outliers(labels, sources, 1 - estimate.support, cfg, ids)
    if cfg.backdoor:
        holds += backdoor_outliers(features, labels, sources, cfg, ids)
    if cfg.label_collisions:
        if inputs is not None and len(inputs) != n:
            raise ValueError(f"{len(inputs)} input rows for {n} labels")
        # the key-blind screen judges every example, whatever the other screens held: where a label is
        # mostly a copy, the per-label screens (backdoor, label noise) hold its honest minority, and
        # what is left overlaps the copied label both ways, like honest look-alikes (measured on the
        # reported benchmark, CLINC150 seed 1: docs/poisoning.md); its thresholds were tuned this way
        spaces: dict[str, tuple[Tensor, tuple[Tensor, Sequence[str]] | None]] = {"model": (features, reference)}
        if inputs is not None and "input" in cfg.collision_spaces:
            # images in a fixed, data-free representation (`collision_input`; representation.py)
            ref_inputs = None
            if reference is not None and input_reference is not None:
                ref_inputs = (input_features(input_reference, cfg.collision_input, cfg.seed), reference[1])
            spaces["input"] = (input_features(inputs, cfg.collision_input, cfg.seed), ref_inputs)
        # the model's representation of a class it never learned is no evidence against the ones it did
        learned = set(known or []) | set(reference[1] if reference is not None else [])
        for space in cfg.collision_spaces:
            if space in spaces:
                rows, ref = spaces[space]
                holds += label_collisions(rows, list(labels), ref, cfg, ids, space,
                                          learned if space == "model" else None)
    if cfg.guard_agreement:
        holds += guard_agreement(features, labels, reference, probs, known, cfg, ids)
    exempt = set(cfg.exempt_sources)
    holds = [h for h in holds if sources[h.index] not in exempt]
    report = {"config": cfg.to_dict(), "seconds": round(time.perf_counter() - started, 4)}
    return ScreenResult(ids, holds, report)


@torch.no_grad()
def represent(model: nn.Module, x: Tensor, task: int | None = None, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(penultimate features, softmax) of a `ContinualClassifier` on inputs `x`, in eval mode. With
    `task`, the logits are masked to the classes live for that task (the classes the model has learned,
    in class-incremental models), so the softmax is over those."""
    was_training = model.training
    model.eval()
    feats, probs = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start: start + batch_size]
        t = None if task is None else torch.full((len(xb),), task, dtype=torch.long)
        feats.append(model.features(xb, t))  # type: ignore[operator]
        probs.append(torch.softmax(model(xb, t), dim=1))
    model.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def screen_model(model: nn.Module, x: Tensor, labels: Sequence[str], sources: Sequence[str | None] | None,
                 label_names: Sequence[str], learned: Sequence[int],
                 reference: tuple[Tensor, Sequence[str]] | None = None, config: ScreenConfig | None = None,
                 ids: Sequence[Any] | None = None, task: int | None = None) -> ScreenResult:
    """`screen` with the representations of `model` (a `ContinualClassifier`): `label_names[c]` names
    output c, `learned` lists the classes it has learned (its softmax is taken over those), and
    `reference` holds trusted inputs (not features) with their label names."""
    learned = sorted(set(int(c) for c in learned))
    features, probs = represent(model, x, task)
    probs = probs[:, learned]
    probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
    known = [label_names[c] for c in learned]
    ref = None
    if reference is not None and len(reference[1]):
        ref = (represent(model, reference[0], task)[0], list(reference[1]))
    return screen(features, labels, sources, probs, known, ref, config, ids, inputs=x,
                  input_reference=None if ref is None or reference is None else reference[0])


def training_data(x: Tensor, labels: Sequence[str], ids: Sequence[Any], result: ScreenResult,
                  approved: Sequence[Any] = ()) -> tuple[Tensor, list[str], list[Any]]:
    """The part of a screened batch an update may train on: every example no screen held, plus those
    a maintainer approved (by id). Held, unapproved examples never leave this function."""
    if len(result.ids) != len(labels) or list(result.ids) != list(ids):
        raise ValueError("the screening result is for another batch (ids differ)")
    ok = set(approved)
    held = {h.index for h in result.holds if result.ids[h.index] not in ok}
    keep = [i for i in range(len(labels)) if i not in held]
    index = torch.tensor(keep, dtype=torch.long)
    return x[index], [labels[i] for i in keep], [ids[i] for i in keep]
