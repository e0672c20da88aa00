"""Label noise: what each example's label should be, by witnesses that never saw it (a probe, the
nearest neighbours voting by source, the current model), and confident learning's verdict on it."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.screening.base import Hold, ScreenConfig
from lifelong.screening.sources import source_names


def _normalise(x: Tensor) -> Tensor:
    return nn.functional.normalize(x.float(), dim=1)


def _neighbours(query: Tensor, pool: Tensor, k: int, exclude_self: bool) -> Tensor:
    """Indices [n, k] of each query row's k nearest pool rows by cosine (rows of `query` are rows
    0..n-1 of `pool` when `exclude_self`)."""
    k = min(k, len(pool) - (1 if exclude_self else 0))
    out = []
    for start in range(0, len(query), 1024):
        sim = query[start: start + 1024] @ pool.T
        if exclude_self:
            sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -math.inf
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def _fit_probe(x: Tensor, y: Tensor, w: Tensor, classes: int, l2: float) -> tuple[Tensor, Tensor]:
    """Weighted multinomial logistic regression (L-BFGS from zero: deterministic)."""
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=100, history_size=10, line_search_fn="strong_wolfe")
    wn = w / w.sum()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (nn.functional.cross_entropy(x @ weight + bias, y, reduction="none") * wn).sum()
        loss = loss + l2 * (weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()


@dataclass
class LabelEstimate:
    """Out-of-sample label probabilities of a batch (rows 0..n-1) and the reference (rows n..):
    `probs` [n + m, len(vocab)], `given` the column of each row's label."""

    vocab: list[str]
    probs: Tensor
    given: Tensor
    n: int

    @property
    def support(self) -> Tensor:
        """Probability of each batch example's own label."""
        return self.probs[torch.arange(self.n), self.given[: self.n]]


def estimate_labels(features: Tensor, labels: Sequence[str], sources: Sequence[str | None],
                    probs: Tensor | None = None, known: Sequence[str] | None = None,
                    reference: tuple[Tensor, Sequence[str]] | None = None,
                    config: ScreenConfig | None = None) -> LabelEstimate:
    """What each example's label should be, by three witnesses that never saw the example's own label:

    - a linear probe on the (standardised) features, cross-validated in `folds` folds, trained with
      weights that give every (source, label) pair the same total weight and each reference label
      `reference_units` times that: volume from one key cannot buy a region of feature space;
    - the k nearest neighbours (cosine) over batch and reference, one source's neighbours giving at
      most `votes_per_source` votes per label, a reference neighbour `reference_weight`;
    - the current model's softmax over the labels it has learned (`known`), for examples labelled
      with one of them (a label it never learned gets no vote from it: new is not suspicious).

    Mixed as (1 - model_share) * ((1 - knn_share) * probe + knn_share * knn) + model_share * model."""
    cfg = config or ScreenConfig()
    n = len(labels)
    ref_f, ref_labels = (reference[0].float(), list(reference[1])) if reference is not None else (features[:0], [])
    all_labels = list(labels) + ref_labels
    vocab = sorted(set(all_labels) | set(known or []))
    col = {v: j for j, v in enumerate(vocab)}
    given = torch.tensor([col[v] for v in all_labels], dtype=torch.long)
    m = len(all_labels)
    feats = _normalise(torch.cat([features.float(), ref_f]))
    names = source_names(sources) + [f"#reference-{v}" for v in ref_labels]
    group = Counter(zip(names, all_labels, strict=True))
    ref_count = Counter(ref_labels)
    w = torch.tensor([1.0 / group[(s, v)] for s, v in zip(names[:n], labels, strict=True)]
                     + [cfg.reference_units / ref_count[v] for v in ref_labels])
    # the probe, out of fold
    z = (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-6)
    fold = torch.randperm(m, generator=torch.Generator().manual_seed(cfg.seed)) % cfg.folds
    probe = torch.zeros(m, len(vocab))
    for k in range(cfg.folds):
        train, test = (fold != k).nonzero().squeeze(1), (fold == k).nonzero().squeeze(1)
        if len(test) == 0:
            continue
        weight, bias = _fit_probe(z[train], given[train], w[train], len(vocab), cfg.probe_l2)
        probe[test] = torch.softmax(z[test] @ weight + bias, dim=1)
    # the neighbours
    votes = torch.zeros(m, len(vocab))
    is_ref = [False] * n + [True] * len(ref_labels)
    # neighbours past a source's cap are skipped, not counted: copies from one key cannot fill a
    # neighbourhood and crowd out the other voices
    for i, row in enumerate(_neighbours(feats, feats, 10 * cfg.neighbours, exclude_self=True).tolist()):
        used: Counter[tuple[str, int]] = Counter()
        cast = 0
        for j in row:
            lab = int(given[j])
            if is_ref[j]:
                votes[i, lab] += cfg.reference_weight
            elif used[(names[j], lab)] < cfg.votes_per_source:
                used[(names[j], lab)] += 1
                votes[i, lab] += 1.0
            else:
                continue
            cast += 1
            if cast == cfg.neighbours:
                break
    knn = votes / votes.sum(1, keepdim=True).clamp_min(1e-12)
    mixed = (1 - cfg.knn_share) * probe + cfg.knn_share * knn
    if probs is not None and known is not None and cfg.model_share > 0 and len(known):
        model = torch.zeros(m, len(vocab))
        model[:n, [col[v] for v in known]] = probs.float() / probs.float().sum(1, keepdim=True).clamp_min(1e-12)
        learned = set(known)
        # the model votes on its own labels' examples; the reference rows are its training distribution
        speaks = torch.tensor([v in learned for v in labels] + [False] * len(ref_labels))
        mixed = torch.where(speaks[:, None], (1 - cfg.model_share) * mixed + cfg.model_share * model, mixed)
    return LabelEstimate(vocab, mixed, given, n)


def label_noise(features: Tensor, labels: Sequence[str], sources: Sequence[str | None],
                probs: Tensor | None = None, known: Sequence[str] | None = None,
                reference: tuple[Tensor, Sequence[str]] | None = None, config: ScreenConfig | None = None,
                ids: Sequence[Any] | None = None, estimate: LabelEstimate | None = None) -> list[Hold]:
    """Hold the examples whose label the witnesses of `estimate_labels` do not support.

    `method="cleanlab"` (default): confident learning's `find_label_issues` (prune by noise rate)
    over the batch and the reference together, so that per-label thresholds come from trusted rows
    too, kept where the own label's probability is below `support`; `method="threshold"`: the own
    label's probability is below `support` and another label's is higher."""
    cfg = config or ScreenConfig()
    ids = list(range(len(labels))) if ids is None else list(ids)
    est = estimate or estimate_labels(features, labels, sources, probs, known, reference, cfg)
    n = est.n
    if n == 0:
        return []
    if cfg.method == "cleanlab":
        import warnings

        try:
            from cleanlab.filter import find_label_issues
        except ImportError as exc:  # pragma: no cover - the [security] extra installs it
            raise ImportError("the label-noise screen's default method needs cleanlab: pip install "
                              "'lifelong[security]' (or set method='threshold')") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few examples in class k": the reference's small classes
            flagged = torch.from_numpy(find_label_issues(est.given.numpy(), est.probs.double().numpy(),
                                                         filter_by="prune_by_noise_rate", n_jobs=1))[:n]
        # confident learning flags as many as it estimates are wrong, including honest examples of
        # look-alike classes; only those whose own label is clearly unsupported are held
        flagged &= est.support < cfg.support
    elif cfg.method == "threshold":
        flagged = (est.support < cfg.support) & (est.probs[:n].argmax(1) != est.given[:n])
    else:
        raise ValueError(f"unknown label-noise method {cfg.method!r}; use 'cleanlab' or 'threshold'")
    others = est.probs[:n].clone()
    others[torch.arange(n), est.given[:n]] = -1.0
    lead_p, lead = others.max(1)
    holds = []
    for i in flagged.nonzero().squeeze(1).tolist():
        holds.append(Hold(i, ids[i], "label-noise",
                          f"labelled {labels[i]!r}, but the model's representation says {est.vocab[int(lead[i])]!r} "
                          f"(p {float(lead_p[i]):.2f} vs {float(est.support[i]):.2f} for its label)",
                          float(1 - est.support[i])))
    return holds
