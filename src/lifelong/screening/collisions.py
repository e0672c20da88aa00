"""Label collisions: one label's examples that carry a copy of another label's examples, whoever sent them.

A targeted flip (class A's inputs sent with label B) leaves its mark in the data, not in the keys: the
examples labelled B then hold two modes, B's own and a copy of what the examples labelled A look like,
while the examples labelled A hold nothing of B's own. The relation is asymmetric, and that is what
tells the poison from the honest examples it copies, even when the flipped copies outnumber them and
are sent from as many keys as the honest ones (a sybil attack, which per-key votes cannot see).

For each pair of labels (L, M) whose examples touch, in a representation (the model's features or
the inputs themselves), over the examples of both:

1. g(x): the share of M among the k nearest neighbours of x (cosine; x itself excluded);
2. the mixture proportion of M in L (Scott, Blanchard and Handy 2013; Elkan and Noto 2008): where M
   lives, p_L / p_M cannot fall below the share of L that copies M, so a low quantile of the
   estimated density ratio (1 - g) / g * n_M / n_L over M's examples estimates it. The reverse
   (how much of M copies L) is estimated the same way over L's examples;
3. a collision: the share is at least `collision_min_share` and the reverse is at most
   `collision_reverse` times it (honest look-alike classes overlap both ways; a flip only one way);
4. each example of L is held when its posterior of belonging to the copy, share * p_M(x) / p_L(x)
   (with the share estimated at the median, where it is least biased), reaches `collision_posterior`;
   with `collision_smooth` > 0, g of L's examples is first averaged over their nearest rows of L
   (a count of k neighbours is noisy, and a copy's neighbours within L are mostly copies);
   with `collision_vote` < 1, every member of a k-means cluster of L in which at least that share of
   the members is held is held too (a copy is a region, and the neighbours of its edge are sparse);
5. repeated up to `collision_rounds` times without what was held (the rest of a copy stands out
   better once its bulk is gone); then, with `collision_grow` > 0, one more step holds the examples
   of L with at least that share of their k nearest in M or in the copy held so far, up to the
   copy's size estimated in the first round (the copy's edge is not a copy of M as a whole, so there
   the share estimate fails); `collision_grow_steps` such steps, each counting what the last held.

Near-duplicate inputs of one label (cosine distance below `collision_duplicate`) count as one
example, so volume cannot buy a region: a hundred copies of one sentence are one piece of evidence.
Trusted reference examples (the guard sets) take part as examples of their labels, and are never
held: a new label whose examples copy a learned class's guard examples is caught the same way.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> a, b = torch.randn(60, 8, generator=g) + 3, torch.randn(60, 8, generator=g) - 3
>>> flipped = torch.randn(40, 8, generator=g) + 3  # more of class a's inputs, labelled b
>>> features = torch.cat([a, b, flipped])
>>> labels = ["a"] * 60 + ["b"] * 60 + ["b"] * 40
>>> held = {h.index for h in label_collisions(features, labels)}
>>> len(held & set(range(120, 160))), len(held - set(range(120, 160)))  # flipped held, honest held
(38, 0)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.screening.base import Hold, ScreenConfig


def unit_rows(x: Tensor) -> Tensor:
    """Rows centred on their mean and scaled to unit length (distances become cosine distances)."""
    x = x.flatten(1).float()
    return nn.functional.normalize(x - x.mean(0), dim=1)


def _groups(z: Tensor, labels: Sequence[str], eps: float) -> list[int]:
    """For each row, the first row of its group of near-duplicates of the same label (cosine
    distance below `eps`, transitively)."""
    parent = list(range(len(labels)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if eps > 0:
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_label.setdefault(label, []).append(i)
        for rows in by_label.values():
            if len(rows) < 2:
                continue
            idx = torch.tensor(rows)
            for start in range(0, len(rows), 1024):
                close = (1 - z[idx[start: start + 1024]] @ z[idx].T < eps).nonzero().tolist()
                for a, b in close:
                    ra, rb = find(rows[start + a]), find(rows[b])
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(len(labels))]


def _kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 30) -> Tensor:
    """Cluster assignments of a k-means (k-means++ start, fixed seed: deterministic)."""
    g = torch.Generator().manual_seed(seed)
    k = min(k, len(x))
    chosen = [int(torch.randint(len(x), (1,), generator=g))]
    d = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = d.sum()
        nxt = int(torch.multinomial(d / total, 1, generator=g)) if total > 0 else 0
        chosen.append(nxt)
        d = torch.minimum(d, ((x - x[nxt]) ** 2).sum(1))
    centres = x[torch.tensor(chosen)]
    assign = torch.zeros(len(x), dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        new = torch.stack([x[assign == c].mean(0) if (assign == c).any() else centres[c] for c in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return assign


def _touching(z: Tensor, label_of: Tensor, n_labels: int, k: int = 10) -> Tensor:
    """[M, L]: the share of label M's rows that have a row of label L among their k nearest."""
    hits = torch.zeros(n_labels, n_labels)
    k = min(k, len(z) - 1)
    for start in range(0, len(z), 1024):
        sim = z[start: start + 1024] @ z.T
        sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -2.0
        near = label_of[sim.topk(k, dim=1).indices]  # [b, k]
        seen = torch.zeros(len(sim), n_labels, dtype=torch.bool).scatter_(1, near, True)
        hits.index_add_(0, label_of[start: start + len(sim)], seen.float())
    counts = torch.bincount(label_of, minlength=n_labels).clamp_min(1)
    return hits / counts[:, None]


@dataclass
class Collision:
    """One label (`label`) found to carry a copy of another's (`copies`): the estimated share of its
    examples in the copy, the reverse share, and the rows held (positions in the screened rows)."""

    label: str
    copies: str
    share: float
    reverse: float
    rows: list[int]


def _logistic_share(x: Tensor, is_m: Tensor, dims: int, seed: int, folds: int = 5) -> Tensor:
    """Out-of-fold P(M | x) of a logistic regression of M against L on the rows' top `dims` principal
    components (standardised): the classifier form of the neighbour share (Elkan and Noto 2008)."""
    from lifelong.screening.labels import _fit_probe

    f = x - x.mean(0)
    dims = max(1, min(dims, f.shape[1], len(f) - 1))
    pcs = f @ torch.linalg.svd(f, full_matrices=False)[2][:dims].T
    pcs = (pcs - pcs.mean(0)) / pcs.std(0).clamp_min(1e-6)
    y = is_m.long()
    fold = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) % folds
    out = torch.zeros(len(x))
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any() or len(y[train].unique()) < 2:
            out[test] = float(y[train].float().mean()) if train.any() else 0.5
            continue
        weight, bias = _fit_probe(pcs[train], y[train], torch.ones(int(train.sum())), 2, 1e-3)
        out[test] = torch.softmax(pcs[test] @ weight + bias, dim=1)[:, 1]
    return out


def _neighbour_share(z: Tensor, rows_a: Tensor, rows_b: Tensor, neighbours: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """Over the rows of A then B: (their similarities, -2 on the diagonal; 1 for B's rows; each row's
    share of B among its k nearest; k)."""
    u = torch.cat([rows_a, rows_b])
    k = min(neighbours, len(u) - 1)
    sim = z[u] @ z[u].T
    sim.fill_diagonal_(-2.0)
    is_b = torch.cat([torch.zeros(len(rows_a)), torch.ones(len(rows_b))])
    return sim, is_b, is_b[sim.topk(k, dim=1).indices].mean(1), k


def _smooth(sim_l: Tensor, g_l: Tensor, m: int) -> Tensor:
    """g of each L row averaged with its m nearest L rows' (one step of label propagation over L's own
    neighbourhood graph; `sim_l` has -2 on its diagonal). Why: g is a count of k neighbours, whose
    binomial noise (sd about 0.11 at k = 20, g = 0.43) puts much of a copy's core below the posterior
    threshold by chance; a copy's nearest rows within L are mostly copies, so the mean over them keeps
    its level and cuts the noise by about sqrt(m + 1), while the count's neighbourhood stays at k
    (a larger k smooths CLINC150's small intents away)."""
    m = min(m, len(g_l) - 1)
    near = sim_l.topk(m, dim=1).indices
    return (g_l + g_l[near].sum(1)) / (m + 1)


def _pair(z: Tensor, rows_l: Tensor, rows_m: Tensor,
          cfg: ScreenConfig) -> tuple[float, float, float, Tensor] | None:
    """One round for the pair (L, M): (share, reverse, share at the median, posterior of each L row),
    or None when the pair is not a collision."""
    u = torch.cat([rows_l, rows_m])
    n_l, n_m = len(rows_l), len(rows_m)
    sim, is_m, g, k = _neighbour_share(z, rows_l, rows_m, cfg.collision_neighbours)
    floor = 1.0 / k
    if cfg.collision_estimator == "knn+logistic":
        # a count of k neighbours is noisy (sd about 0.11 at k = 20), and the posterior is linear in
        # its odds: averaged with a smooth classifier's estimate, the core of a copy no longer falls
        # below the threshold by chance (docs/poisoning.md, Fashion-MNIST targeted-sybil 30 %, seed 0)
        g = (g + _logistic_share(z[u], is_m, cfg.collision_dims, cfg.seed)) / 2
        floor = 1.0 / (2 * k)
    if cfg.collision_smooth > 0 and n_l > 1:
        g = torch.cat([_smooth(sim[:n_l, :n_l], g[:n_l], cfg.collision_smooth), g[n_l:]])
    ratio_m = (1 - g[n_l:]) / g[n_l:].clamp_min(floor) * n_m / n_l  # p_L / p_M at M's examples
    ratio_l = g[:n_l] / (1 - g[:n_l]).clamp_min(floor) * n_l / n_m  # p_M / p_L at L's examples
    share = float(ratio_m.quantile(cfg.collision_quantile).clamp(0, 1))
    reverse = float(ratio_l.quantile(cfg.collision_quantile).clamp(0, 1))
    if share < cfg.collision_min_share or reverse > cfg.collision_reverse * share:
        return None
    at_median = float(ratio_m.median().clamp(0, 1))
    return share, reverse, at_median, (at_median * ratio_l).clamp(0, 1)


def _grow(z: Tensor, rows_l: Tensor, rows_copy: Tensor, budget: int, cfg: ScreenConfig) -> Tensor:
    """The rows of L (bool over `rows_l`) with at least `collision_grow` of their k nearest among L,
    M and the copy held so far (`rows_copy`: M's rows and the held ones) in the copy's side; at most
    `budget` of them, the most surrounded first.

    Why: once a pair is a collision and its core is held, what is left of the copy is its edge, and
    there the mixture-proportion estimate fails (the remnant is no longer a copy of M as a whole: its
    share estimate collapses to 0). But the edge's neighbours are still mostly copies: on
    Fashion-MNIST's 30 % sybil (report seed 0) the 83 flipped sneakers under posterior 0.5 have 11.6
    copies, 4 honest sneakers and 4.5 honest sandals among their 20 nearest, the honest sandals 2.2,
    1.7 and 16.1. Counted as M, the held core makes the edge stand out (label propagation from the
    core). The budget (the copy's size estimated in the first round, less what is held) stops it where
    no copy is left: without it, growing held 2 points more of the clean feedback even where the first
    round had held the whole copy (validation, docs/poisoning.md)."""
    if budget <= 0:
        return torch.zeros(len(rows_l), dtype=torch.bool)
    # not smoothed over L: what is left of L is mostly L's own, and its mean would hide the edge
    g = _neighbour_share(z, rows_l, rows_copy, cfg.collision_neighbours)[2][: len(rows_l)]
    out = torch.zeros(len(rows_l), dtype=torch.bool)
    order = g.argsort(descending=True, stable=True)[:budget]
    out[order[g[order] >= cfg.collision_grow]] = True
    return out


def _vote(z: Tensor, rows_l: Tensor, held: Tensor, cfg: ScreenConfig) -> Tensor:
    """Extend `held` (bool over rows_l) to whole k-means clusters of L mostly held already."""
    if cfg.collision_vote >= 1 or len(rows_l) < 4:
        return held
    f = z[rows_l] - z[rows_l].mean(0)
    dims = min(20, f.shape[1], len(rows_l) - 1)
    pcs = f @ torch.linalg.svd(f, full_matrices=False)[2][:dims].T
    assign = _kmeans(pcs, max(2, min(10, len(rows_l) // 50)), cfg.seed)
    out = held.clone()
    for c in assign.unique().tolist():
        members = assign == c
        if float(held[members].float().mean()) >= cfg.collision_vote:
            out |= members
    return out


def _judge(z: Tensor, rows_l: Tensor, rows_m: Tensor, held: Tensor,
           cfg: ScreenConfig) -> list[tuple[Tensor, float, float]]:
    """The rounds for the pair (L, M) over L's rows that may be held (`rows_l`), skipping and updating
    `held` (bool over all rows): what each round held, with its share and reverse."""
    out: list[tuple[Tensor, float, float]] = []
    first: tuple[float, float] | None = None  # the first round's share and reverse
    copies = 0  # the copy's size, estimated in the first round
    for _ in range(cfg.collision_rounds):
        rest = rows_l[~held[rows_l]]
        if len(rest) < cfg.collision_min_examples:
            break
        verdict = _pair(z, rest, rows_m, cfg)
        if verdict is None:
            break
        share, reverse, at_median, posterior = verdict
        if first is None:
            first, copies = (share, reverse), round(at_median * len(rest))
        new = _vote(z, rest, posterior >= cfg.collision_posterior, cfg)
        if not new.any():
            break
        held[rest[new]] = True
        out.append((rest[new], share, reverse))
    if first is None or cfg.collision_grow <= 0:
        return out
    for _ in range(cfg.collision_grow_steps):
        # after the rounds: steps grown from the copy held so far (see _grow); each step counts what the
        # last one held as copy, so a clump of copies whose neighbours are mostly other missed copies
        # is taken from its held side inwards
        rest = rows_l[~held[rows_l]]
        if len(rest) < cfg.collision_min_examples:
            break
        caught = torch.cat([rows for rows, _, _ in out]) if out else rows_l[:0]
        new = _grow(z, rest, torch.cat([rows_m, caught]), copies - len(caught), cfg)
        if not new.any():
            break
        held[rest[new]] = True
        out.append((rest[new], *first))
    return out


def find_collisions(z: Tensor, labels: Sequence[str], trusted: Sequence[bool] | None = None,
                    config: ScreenConfig | None = None, learned: Collection[str] | None = None) -> list[Collision]:
    """The collisions among rows `z` (unit rows, e.g. from `unit_rows`) with `labels`; `trusted` rows
    (reference examples) count as examples of their label and are never held. With `learned` (the
    labels a model's representation was trained on), only pairs of learned labels are compared: a
    model maps classes it never saw onto the ones it knows, so there their overlap is no evidence."""
    cfg = config or ScreenConfig()
    n = len(labels)
    trusted = list(trusted) if trusted is not None else [False] * n
    if len(z) != n or len(trusted) != n:
        raise ValueError(f"{len(z)} rows, {n} labels and {len(trusted)} trust flags")
    first = _groups(z, labels, cfg.collision_duplicate)
    unique = sorted(set(first))
    members: dict[int, list[int]] = {}
    for i, r in enumerate(first):
        members.setdefault(r, []).append(i)
    names = sorted(set(labels))
    col = {v: j for j, v in enumerate(names)}
    label_of = torch.tensor([col[labels[r]] for r in unique], dtype=torch.long)
    zu = z[torch.tensor(unique, dtype=torch.long)] if unique else z[:0]
    can_hold = torch.tensor([not trusted[r] for r in unique], dtype=torch.bool)
    rows_of = {v: (label_of == j).nonzero().squeeze(1) for v, j in col.items()}
    touch = _touching(zu, label_of, len(names)) if len(unique) > 1 else torch.zeros(len(names), len(names))
    held = torch.zeros(len(unique), dtype=torch.bool)
    found: list[Collision] = []
    for m_name in names:
        rows_m = rows_of[m_name]
        if len(rows_m) < cfg.collision_min_examples:
            continue
        for l_name in names:
            if l_name == m_name or float(touch[col[m_name], col[l_name]]) < cfg.collision_cover:
                continue
            if learned is not None and not (l_name in learned and m_name in learned):
                continue
            for rows, share, reverse in _judge(zu, rows_of[l_name][can_hold[rows_of[l_name]]], rows_m, held, cfg):
                # a group of near-duplicates may hold trusted rows too (a batch example that copies a
                # guard example): those are never held
                kept = [i for r in rows.tolist() for i in members[unique[r]] if not trusted[i]]
                found.append(Collision(l_name, m_name, share, reverse, sorted(kept)))
    return found


def label_collisions(features: Tensor, labels: Sequence[str], reference: tuple[Tensor, Sequence[str]] | None = None,
                     config: ScreenConfig | None = None, ids: Sequence[Any] | None = None,
                     space: str = "model", learned: Collection[str] | None = None) -> list[Hold]:
    """Hold the examples of a label that copy another label's examples (see the module docstring).
    `features` [n, ...]: the batch in one representation (`space` names it in the reasons);
    `reference`: trusted rows in the same representation with their labels; `learned`: for a model's
    representation, the labels the model learned (see `find_collisions`)."""
    cfg = config or ScreenConfig()
    n = len(labels)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows for {n} labels")
    ids = list(range(n)) if ids is None else list(ids)
    rows, names = features.flatten(1).float(), list(labels)
    if reference is not None and len(reference[1]):
        rows = torch.cat([rows, reference[0].flatten(1).float()])
        names += list(reference[1])
    trusted = [False] * n + [True] * (len(names) - n)
    holds = []
    for c in find_collisions(unit_rows(rows), names, trusted, cfg, learned):
        for i in c.rows:
            holds.append(Hold(i, ids[i], "label-collision",
                              f"labelled {c.label!r}, but it belongs to a copy of the {c.copies!r} examples inside "
                              f"label {c.label!r} (about {c.share:.0%} of {c.label!r}'s examples; {c.copies!r} holds "
                              f"{c.reverse:.0%} of {c.label!r}'s own) in the {space} space", c.share))
    return holds
