"""Backdoor triggers: per-label outliers in the model's representation space (spectral signatures,
Tran et al. 2018; activation clustering, Chen et al. 2018)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.screening.base import Hold, ScreenConfig
from lifelong.screening.sources import source_names


def _robust_z(x: Tensor) -> Tensor:
    med = x.median()
    mad = (x - med).abs().median().clamp_min(1e-12)
    return (x - med) / (1.4826 * mad)


def _two_means(z: Tensor, seed: int = 0, iters: int = 30) -> Tensor:
    """Assignments (0/1) of a 2-means clustering (k-means++ start, fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(z), (1,), generator=g))
    d = ((z - z[first]) ** 2).sum(1)
    second = int(torch.multinomial(d / d.sum().clamp_min(1e-12), 1, generator=g)) if d.sum() > 0 else first
    centres = torch.stack([z[first], z[second]])
    assign = torch.zeros(len(z), dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(z, centres).argmin(1)
        new = torch.stack([z[assign == c].mean(0) if (assign == c).any() else centres[c] for c in range(2)])
        if torch.allclose(new, centres):
            break
        centres = new
    return assign


def _silhouette(z: Tensor, assign: Tensor) -> float:
    if assign.min() == assign.max():
        return 0.0
    d = torch.cdist(z, z)
    a_mask = assign[:, None] == assign[None, :]
    n_same = a_mask.sum(1) - 1
    a = (d * a_mask).sum(1) / n_same.clamp_min(1)
    b = (d * ~a_mask).sum(1) / (~a_mask).sum(1).clamp_min(1)
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
    return float(s.mean())


def backdoor_outliers(features: Tensor, labels: Sequence[str], sources: Sequence[str | None],
                      config: ScreenConfig | None = None, ids: Sequence[Any] | None = None) -> list[Hold]:
    """Per label with at least `min_label_size` examples:

    - spectral signature: project the label's centred features (centred on the coordinate-wise
      median, which a minority cannot move) on their top singular direction, and hold examples whose
      robust z-score there exceeds `spectral_z`;
    - activation clustering: split the label's features (10 principal components) in two by 2-means;
      if the split is clear (silhouette above `cluster_min_separation`) and one cluster was sent by at
      most `cluster_max_sources` sources (at least `cluster_source_share` of it) while the label as a
      whole has more, hold that cluster: many examples of one label that look alike and come from one
      or two keys are how a trigger is planted."""
    cfg = config or ScreenConfig()
    ids = list(range(len(labels))) if ids is None else list(ids)
    names = source_names(sources)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        by_label[lab].append(i)
    holds: list[Hold] = []
    for lab, members in by_label.items():
        if len(members) < cfg.min_label_size:
            continue
        f = features[torch.tensor(members)].float()
        centred = f - f.median(0).values
        _, _, v = torch.linalg.svd(centred - centred.mean(0), full_matrices=False)
        proj = centred @ v[0]
        z = _robust_z(proj).abs()
        for k in (z > cfg.spectral_z).nonzero().squeeze(1).tolist():
            i = members[k]
            holds.append(Hold(i, ids[i], "backdoor",
                              f"an outlier of label {lab!r} along its top principal direction (robust z "
                              f"{float(z[k]):.1f} > {cfg.spectral_z})", float(z[k])))
        label_sources = {names[i] for i in members}
        if len(label_sources) <= cfg.cluster_max_sources:
            continue  # a label taught by few sources: the source test cannot tell a cluster apart
        dims = min(10, f.shape[1], len(members) - 1)
        pcs = (f - f.mean(0)) @ torch.linalg.svd(f - f.mean(0), full_matrices=False)[2][:dims].T
        assign = _two_means(pcs)
        separation = _silhouette(pcs, assign)
        if separation < cfg.cluster_min_separation:
            continue
        for c in (0, 1):
            part = [members[k] for k in (assign == c).nonzero().squeeze(1).tolist()]
            if not part or len(part) == len(members):
                continue
            top = Counter(names[i] for i in part).most_common(cfg.cluster_max_sources)
            share = sum(n for _, n in top) / len(part)
            if share >= cfg.cluster_source_share:
                who = ", ".join(repr(s) for s, _ in top)
                for i in part:
                    holds.append(Hold(i, ids[i], "backdoor",
                                      f"one of {len(part)} look-alike examples of label {lab!r} ({share:.0%} sent "
                                      f"by {who}; cluster separation {separation:.2f})", separation))
    return holds
