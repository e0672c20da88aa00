"""Per-source limits: a rate limit per key at intake (`SourceRateLimiter`), a cap on any one source's
share of an update (`cap_source_share`), and sources whose examples are far more suspicious than
other sources' (`source_outliers`). A source is the authenticated API key that sent an example."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.screening.base import Hold, ScreenConfig


def source_names(sources: Sequence[str | None]) -> list[str]:
    """Anonymous examples are each their own source (they cannot be grouped)."""
    return [f"#anonymous-{i}" if s is None else str(s) for i, s in enumerate(sources)]


class SourceRateLimiter:
    """A token bucket per source: `per_minute` examples a minute on average, bursts up to `burst`.

    >>> limiter = SourceRateLimiter(per_minute=60, burst=100)
    >>> limiter.take("key1", 80, now=0.0), limiter.take("key1", 30, now=0.0)
    ((True, 0.0), (False, 10.0))
    >>> limiter.take("key1", 30, now=10.0)
    (True, 0.0)
    """

    def __init__(self, per_minute: float, burst: float | None = None):
        if per_minute <= 0:
            raise ValueError(f"per_minute must be > 0, not {per_minute}")
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else per_minute)
        if self.burst <= 0:
            raise ValueError(f"burst must be > 0, not {burst}")
        self._tokens: dict[str, tuple[float, float]] = {}  # source -> (tokens, time)

    def take(self, source: str, n: int = 1, now: float | None = None) -> tuple[bool, float]:
        """Take `n` examples' worth for `source`: (allowed, seconds to wait before `n` would be).
        A refused request takes nothing; a request larger than the burst is never allowed."""
        now = time.monotonic() if now is None else now
        tokens, last = self._tokens.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if n <= tokens:
            self._tokens[source] = (tokens - n, now)
            return True, 0.0
        self._tokens[source] = (tokens, now)
        return False, (math.inf if n > self.burst else (n - tokens) / self.rate)


def cap_source_share(sources: Sequence[str | None], max_share: float = 0.1, min_sources: int = 5,
                     exempt: Sequence[str] = (), ids: Sequence[Any] | None = None) -> list[Hold]:
    """Hold each source's examples beyond what keeps it at or below its cap of the examples kept
    (its earliest are kept). The cap is `max_share`, or twice an even share (2 / number of sources)
    when that is larger: with 10 contributors, 10 % would hold ordinary ones. Applies only when the
    batch has at least `min_sources` distinct sources; `exempt` sources are not capped. Examples
    without a source count as one anonymous source."""
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be in (0, 1], not {max_share}")
    ids = list(range(len(sources))) if ids is None else list(ids)
    names = ["(anonymous)" if s is None else str(s) for s in sources]
    counts = Counter(names)
    max_share = max(max_share, 2 / max(len(counts), 1))
    if len(counts) < min_sources or max_share >= 1:
        return []
    # water-filling: the largest cap c such that every capped source keeps min(count, c) and
    # c <= max_share * total kept (a source's share is measured against what is trained on)
    free = sum(n for s, n in counts.items() if s in exempt)
    capped = sorted(n for s, n in counts.items() if s not in exempt)

    def kept_total(c: float) -> float:
        return free + sum(min(n, c) for n in capped)

    lo, hi = 0.0, float(max(capped, default=0))
    for _ in range(60):
        mid = (lo + hi) / 2
        if mid <= max_share * kept_total(mid):
            lo = mid
        else:
            hi = mid
    cap = max(1, math.floor(lo + 1e-9))
    holds, seen = [], Counter[str]()
    total = len(names)
    for i, s in enumerate(names):
        if s in exempt:
            continue
        seen[s] += 1
        if seen[s] > cap:
            holds.append(Hold(i, ids[i], "source-share",
                              f"source {s!r} sent {counts[s]} of {total} examples; at most {cap} are trained on "
                              f"(share cap {max_share:.0%})", counts[s] / total))
    return holds


def _weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The value below which at most half the weight lies, and at least half at or below it (the lower
    weighted median, as `torch.median` takes the lower of two middle values)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    half, total = sum(weights) / 2, 0.0
    for i in order:
        total += weights[i]
        if total >= half:
            return float(values[i])
    return float(values[order[-1]])


def source_outliers(labels: Sequence[str], sources: Sequence[str | None], suspicion: Tensor,
                    config: ScreenConfig | None = None, ids: Sequence[Any] | None = None) -> list[Hold]:
    """Hold what a source sent when its examples are, on average, far more suspicious (`suspicion`:
    1 - the estimated probability of the given label) than other sources' examples: per source over
    everything it sent, and per (source, label) against other sources' examples of that label (or of
    any label, when fewer than 3 sources sent it). A test passes z = (mean - typical level) /
    (typical spread / sqrt(count)) above `source_z` with a gap of at least `source_min_gap`; groups
    smaller than `source_min_examples` are not judged. A source flagged as a whole has all its examples
    held (a key whose feedback is systematically contradicted goes to the maintainers as a whole), one
    flagged on a label its examples of that label. One key cannot hide many poisoned examples among
    its few clean ones. Needs most sources to be honest: a majority of colluding keys is out of reach.

    The typical level is the median source's mean suspicion and the typical spread the median
    source's standard deviation. With `source_volume` (the default), a source as a whole is tested
    against levels never below the same medians with each source weighted by its number of examples:
    keys that outnumber the honest ones and send unsuspicious examples move the plain medians down
    until whole honest keys look like outliers (clean-label feature collisions on Fashion-MNIST held
    up to 54 % of the clean feedback so, docs/poisoning.md); only volume moves the weighted ones, so
    holding whole honest keys then needs half of the examples too. The per-(source, label) test keeps
    the plain medians (see the comment there)."""
    cfg = config or ScreenConfig()
    ids = list(range(len(labels))) if ids is None else list(ids)
    names = ["" if s is None else str(s) for s in sources]

    def stats(groups: dict[Any, list[int]]) -> dict[Any, tuple[float, float, int]]:
        return {g: (float(suspicion[idx].mean()), float(suspicion[idx].std()) if len(idx) > 1 else 0.0, len(idx))
                for g, idx in groups.items() if len(idx) >= cfg.source_min_examples}

    def centre(rows: Sequence[tuple[float, float, int]], volume: bool = False) -> tuple[float, float]:
        means = torch.tensor([r[0] for r in rows])
        spreads = torch.tensor([r[1] for r in rows if r[2] > 1] or [0.0])
        level, spread = float(means.median()), float(spreads.median())
        if volume:
            # the same medians with each source weighted by its examples: colluding keys that
            # outnumber the honest ones move the plain medians, only volume moves these
            counts = [float(r[2]) for r in rows]
            level = max(level, _weighted_median([r[0] for r in rows], counts))
            many = [(r[1], c) for r, c in zip(rows, counts, strict=True) if r[2] > 1]
            if many:
                spread = max(spread, _weighted_median([v for v, _ in many], [c for _, c in many]))
        return level, max(spread, 0.05)

    def outlier(row: tuple[float, float, int], ref: tuple[float, float]) -> float | None:
        z = (row[0] - ref[0]) / (ref[1] / math.sqrt(row[2]))
        return z if z > cfg.source_z and row[0] - ref[0] >= cfg.source_min_gap else None

    by_source: dict[str, list[int]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (s, lab) in enumerate(zip(names, labels, strict=True)):
        if s:  # anonymous examples cannot be grouped
            by_source[s].append(i)
            by_pair[(s, lab)].append(i)
    holds: list[Hold] = []
    per_source = stats(by_source)
    if len(per_source) >= 3:
        # a whole key is held only when it also stands out against the volume-weighted medians
        ref = centre(list(per_source.values()), cfg.source_volume)
        for s, row in per_source.items():
            z = outlier(row, ref)
            if z is not None:
                holds += [Hold(i, ids[i], "source-outlier",
                               f"source {s!r}: its {row[2]} examples disagree with the model's representation far "
                               f"more than other sources' (mean suspicion {row[0]:.2f} vs {ref[0]:.2f}, z {z:.1f})",
                               z) for i in by_source[s]]
    per_pair = stats(by_pair)
    if len({s for s, _ in per_pair}) >= 3:
        overall = centre(list(per_pair.values()))
        by_label: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        for (_, lab), row in per_pair.items():
            by_label[lab].append(row)
        # a (key, label) group against the keys that sent that label, by key count only: weighted by
        # volume, a flip sent from many keys (most of that label's examples) would set the level its own
        # keys are tested against. So colluding keys can still frame honest senders of one label
        # (measured: docs/poisoning.md), only not hold their whole feedback
        for (s, lab), row in per_pair.items():
            z = outlier(row, centre(by_label[lab]) if len(by_label[lab]) >= 3 else overall)
            if z is not None:
                holds += [Hold(i, ids[i], "source-outlier",
                               f"source {s!r} sent {row[2]} examples labelled {lab!r} that disagree with the "
                               f"model's representation far more than other sources' (mean suspicion {row[0]:.2f}, "
                               f"z {z:.1f})", z) for i in by_pair[(s, lab)]]
    return holds
