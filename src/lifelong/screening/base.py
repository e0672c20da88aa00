"""What every screen shares: `ScreenConfig` (which screens run, their thresholds), `Hold` (one
screen's verdict on one example) and `ScreenResult` (what the screens decided about one batch)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from lifelong.config import Config

SCREENS = ("source-share", "label-noise", "source-outlier", "backdoor")


@dataclass
class ScreenConfig(Config):
    """Which screens run and their thresholds (defaults chosen on validation scenarios, see
    benchmarks/poisoning.py --tune). Round-trips through `to_dict`/`from_dict` (JSON); an unknown
    option is an error."""

    source_limits: bool = True
    label_noise: bool = True
    source_outliers: bool = True
    backdoor: bool = True
    # per-source share of one update
    max_source_share: float = 0.1  # no source above this share of the examples trained on
    min_sources: int = 5  # fewer distinct sources in a round: the share cap does not apply (it would hold most)
    exempt_sources: tuple[str, ...] = ()  # trusted keys (maintainers' own bulk feedback): never capped nor held
    # label noise: the witnesses (estimate_labels) and the decision
    neighbours: int = 20  # k of the nearest-neighbour vote
    votes_per_source: int = 2  # at most this many of one source's neighbours vote per label
    reference_weight: float = 1.0  # a trusted reference neighbour's vote
    reference_units: float = 5.0  # a reference label weighs as much as this many sources in the probe
    knn_share: float = 0.6  # the neighbours' share of the estimate (the rest: the cross-validated probe)
    model_share: float = 0.3  # the current model's share, for examples of labels it has learned
    folds: int = 5
    probe_l2: float = 1e-3
    method: str = "cleanlab"  # or "threshold"
    support: float = 0.1  # held only when the own label's probability is below this (both methods)
    # source outliers
    source_min_examples: int = 5  # (source, label) groups smaller than this are not judged
    source_z: float = 5.0
    source_min_gap: float = 0.15
    # backdoor
    min_label_size: int = 30  # labels with fewer examples are not analysed for outliers
    spectral_z: float = 6.0  # robust z-score along the top direction above which an example is held
    cluster_min_separation: float = 0.2  # silhouette of a 2-means split above which clusters are analysed
    cluster_max_sources: int = 3  # a cluster this few sources sent (while the label has more) is held ...
    cluster_source_share: float = 0.8  # ... when they sent at least this share of it
    seed: int = 0


@dataclass(frozen=True)
class Hold:
    """One screen's verdict on one example: `index` into the screened batch, its feedback `id`, the
    `screen` that flagged it, a sentence for the maintainers' list, and a score (larger: surer)."""

    index: int
    id: Any
    screen: str
    reason: str
    score: float


@dataclass
class ScreenResult:
    """What the screens decided about one batch. `held` and `kept` are positions in the batch;
    `held_ids`/`kept_ids` the feedback ids; `reasons()` every reason per held position."""

    ids: list[Any]
    holds: list[Hold] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def held(self) -> list[int]:
        return sorted({h.index for h in self.holds})

    @property
    def kept(self) -> list[int]:
        held = {h.index for h in self.holds}
        return [i for i in range(len(self.ids)) if i not in held]

    @property
    def held_ids(self) -> list[Any]:
        return [self.ids[i] for i in self.held]

    @property
    def kept_ids(self) -> list[Any]:
        return [self.ids[i] for i in self.kept]

    def reasons(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = defaultdict(list)
        for h in self.holds:
            out[h.index].append(f"{h.screen}: {h.reason}")
        return dict(out)

    def by_id(self) -> dict[Any, list[Hold]]:
        """Feedback id -> its holds (what the service stores with a held example)."""
        out: dict[Any, list[Hold]] = defaultdict(list)
        for h in self.holds:
            out[h.id].append(h)
        return dict(out)

    def to_dict(self) -> dict[str, Any]:
        return {"examples": len(self.ids), "held": len(self.held), "kept": len(self.ids) - len(self.held),
                "held_by_screen": dict(Counter(h.screen for h in self.holds)),
                "holds": [asdict(h) for h in self.holds], **self.report}
