"""Guard agreement: an example whose label the trusted guard sets and the current model both contradict.

The guard sets are held-out examples of the tasks already learned, labelled by the service itself:
evidence no contributor can forge. An example labelled "7" whose nearest guard examples, in the current
model's representation, are nearly all sixes, that lies as close to them as sixes lie to each other,
and that the model itself calls a six, is held, however many keys sent it (a deep k-nearest-neighbour
check, Peri et al. 2020, with the trusted set as the only voters). Only examples of learned labels
(the model's or the guard sets') are judged: the current model has never seen a new class, and maps
its examples somewhere among the old ones (Fashion-MNIST's shoes among its bags), so its word on
them is no evidence. A new label that copies an old class is the label-collision screen's case
(collisions.py, with the guard sets as that class's examples).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> guard = torch.cat([torch.randn(30, 4, generator=g) + 4, torch.randn(30, 4, generator=g) - 4])
>>> batch = torch.cat([torch.randn(5, 4, generator=g) + 4, torch.randn(5, 4, generator=g) - 4])
>>> labels = ["six"] * 10  # the first five are fours sent as sixes
>>> holds = guard_agreement(batch, labels, (guard, ["four"] * 30 + ["six"] * 30))
>>> sorted(h.index for h in holds)
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.screening.base import Hold, ScreenConfig
from lifelong.screening.collisions import unit_rows


def _kth(sim: Tensor, k: int) -> Tensor:
    """Cosine distance to the k-th most similar column of each row."""
    return 1 - sim.topk(k, dim=1).values[:, -1]


def guard_agreement(features: Tensor, labels: Sequence[str], reference: tuple[Tensor, Sequence[str]] | None,
                    probs: Tensor | None = None, known: Sequence[str] | None = None,
                    config: ScreenConfig | None = None, ids: Sequence[Any] | None = None) -> list[Hold]:
    """Hold the examples of learned labels that the trusted `reference` (features and labels of the guard sets) and the
    model (`probs` over the labels `known`, when given) both place in one other class C:

    - at least `guard_share` of the example's `guard_neighbours` nearest reference examples are C;
    - its distance to its k-th nearest reference example of C is at most `guard_radius` times C's own
      radius (the 90th percentile of the same distance among C's reference examples);
    - the model gives C at least `guard_model` probability."""
    cfg = config or ScreenConfig()
    n = len(labels)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows for {n} labels")
    if reference is None or not len(reference[1]) or n == 0:
        return []
    ids = list(range(n)) if ids is None else list(ids)
    ref_labels = list(reference[1])
    z = unit_rows(torch.cat([features.flatten(1).float(), reference[0].flatten(1).float()]))
    zb, zr = z[:n], z[n:]
    k = min(cfg.guard_neighbours, len(ref_labels))
    sim = zb @ zr.T
    near = sim.topk(k, dim=1).indices.tolist()
    by_class: dict[str, Tensor] = {}
    for c in set(ref_labels):
        by_class[c] = torch.tensor([j for j, v in enumerate(ref_labels) if v == c])
    radius: dict[str, float] = {}
    column = {v: j for j, v in enumerate(known or [])}
    learned = set(ref_labels) | set(known or [])
    holds = []
    for i, row in enumerate(near):
        if labels[i] not in learned:
            continue
        cls, count = Counter(ref_labels[j] for j in row).most_common(1)[0]
        if cls == labels[i] or count < cfg.guard_share * k:
            continue
        members = by_class[cls]
        kc = min(k, len(members) - 1)
        if kc < 1:
            continue
        if cls not in radius:
            own = zr[members] @ zr[members].T
            own.fill_diagonal_(-2.0)
            radius[cls] = float(_kth(own, kc).quantile(0.9))
        distance = float(_kth(sim[i: i + 1, members], kc)[0])
        if distance > cfg.guard_radius * radius[cls]:
            continue
        p = None
        if probs is not None and cls in column:
            p = float(probs[i, column[cls]])
            if p < cfg.guard_model:
                continue
        said = f"the model ({p:.2f}) and " if p is not None else ""
        holds.append(Hold(i, ids[i], "guard-agreement",
                          f"labelled {labels[i]!r}, but {said}{count} of its {k} nearest guard examples say {cls!r} "
                          f"(it lies within {cls!r}'s own guard radius: {distance:.3f} <= {radius[cls]:.3f})",
                          count / k))
    return holds
