"""What every screen shares: `ScreenConfig` (which screens run, their thresholds), `Hold` (one
screen's verdict on one example) and `ScreenResult` (what the screens decided about one batch)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from lifelong.config import Config
from lifelong.screening.representation import INPUT_SPACES

# "influence" runs at the gate, after a candidate has trained (lifelong.service.influence)
SCREENS = ("source-share", "label-noise", "source-outlier", "backdoor", "label-collision", "guard-agreement",
           "influence")


@dataclass
class ScreenConfig(Config):
    """Which screens run and their thresholds (defaults chosen on validation scenarios, see
    benchmarks/poisoning.py --tune). Round-trips through `to_dict`/`from_dict` (JSON); an unknown
    option is an error."""

    source_limits: bool = True
    label_noise: bool = True
    source_outliers: bool = True
    backdoor: bool = True
    label_collisions: bool = True
    guard_agreement: bool = True
    # per-source share of one update
    max_source_share: float = 0.1  # no source above this share of the examples trained on
    min_sources: int = 5  # fewer distinct sources in a round: the share cap does not apply (it would hold most)
    exempt_sources: tuple[str, ...] = ()  # trusted keys (maintainers' own bulk feedback): never capped nor held
    # label noise: the witnesses (estimate_labels) and the decision
    neighbours: int = 20  # k of the nearest-neighbour vote
    votes_per_source: int = 2  # at most this many of one source's neighbours vote per label
    reference_weight: float = 1.0  # a trusted reference neighbour's vote
    reference_units: float = 5.0  # a reference label weighs as much as this many sources in the probe
    knn_share: float = 0.3  # the neighbours' share of the estimate (the rest: the cross-validated probe)
    model_share: float = 0.3  # the current model's share, for examples of labels it has learned
    folds: int = 5
    probe_l2: float = 1e-3
    method: str = "cleanlab"  # or "threshold"
    support: float = 0.1  # held only when the own label's probability is below this (both methods)
    # source outliers
    source_min_examples: int = 5  # (source, label) groups smaller than this are not judged
    source_z: float = 5.0
    source_min_gap: float = 0.15
    source_volume: bool = True  # a whole source is tested against levels never below the volume-weighted medians
    # backdoor
    min_label_size: int = 30  # labels with fewer examples are not analysed for outliers
    spectral_z: float = 6.0  # robust z-score along the top direction above which an example is held
    cluster_min_separation: float = 0.2  # silhouette of a 2-means split above which clusters are analysed
    cluster_max_sources: int = 3  # a cluster this few sources sent (while the label has more) is held ...
    cluster_source_share: float = 0.8  # ... when they sent at least this share of it
    # label collisions (collisions.py): per label, independent of keys
    collision_spaces: tuple[str, ...] = ("input", "model")  # representations searched: the inputs, the model's features
    collision_input: str = "hog"  # images in the input space: "raw", "random-conv", "hog" (representation.py)
    collision_neighbours: int = 20  # k of the neighbour share g(x)
    collision_estimator: str = "knn"  # g(x): the k-NN share ("knn"), or its mean with a logistic one ("knn+logistic")
    collision_dims: int = 20  # principal components the logistic estimate uses
    collision_smooth: int = 0  # g(x) of an example of L averaged over its this many nearest L rows (0: off)
    collision_quantile: float = 0.1  # quantile of the density ratio estimating a copy's share (and the reverse)
    collision_min_share: float = 0.1  # a copy smaller than this share of its label is not a collision
    collision_reverse: float = 0.5  # ... nor one whose reverse share is above this times its share
    collision_posterior: float = 0.7  # an example is held when its posterior of being in the copy reaches this
    collision_vote: float = 1.0  # a k-means cluster of the label with this share held is held whole (1: off)
    collision_rounds: int = 3
    collision_grow: float = 0.9  # then one step holds rows with this share of copied-or-held neighbours (0: off)
    collision_grow_steps: int = 3  # ... repeated this many times, each counting what the last held as copy
    collision_cover: float = 0.5  # pairs are examined when this share of one label has the other among its 10 nearest
    collision_min_examples: int = 10  # labels with fewer distinct examples are not judged
    collision_duplicate: float = 0.02  # inputs of one label closer than this (cosine distance) count once
    # guard agreement (guards.py): the trusted guard sets and the current model against the label
    guard_neighbours: int = 10
    guard_share: float = 0.8  # the nearest guard examples name one other class at least this often ...
    guard_model: float = 0.5  # ... the model gives that class at least this probability ...
    guard_radius: float = 1.0  # ... and the example lies within this times that class's own guard radius
    # influence check at the gate (lifelong.service.influence): clusters found in the trained
    # candidate's representation are held when training without them does not cost the new task
    influence: bool = True
    influence_tolerance: float = 0.0  # removing a cluster may cost the new task at most this accuracy
    influence_min_share: float = 0.1  # a suspicious cluster copies at least this share of its label
    seed: int = 0

    def __post_init__(self) -> None:
        unit = {"collision_quantile": self.collision_quantile, "collision_posterior": self.collision_posterior,
                "collision_vote": self.collision_vote, "collision_cover": self.collision_cover,
                "guard_share": self.guard_share, "guard_model": self.guard_model}
        for name, value in unit.items():
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], not {value}")
        counts = {"collision_neighbours": self.collision_neighbours, "collision_rounds": self.collision_rounds,
                  "collision_min_examples": self.collision_min_examples, "guard_neighbours": self.guard_neighbours,
                  "collision_grow_steps": self.collision_grow_steps}
        for name, count in counts.items():
            if count < 1:
                raise ValueError(f"{name} must be at least 1, not {count}")
        if not 0 <= self.collision_grow <= 1:
            raise ValueError(f"collision_grow must be in [0, 1], not {self.collision_grow}")
        if self.collision_smooth < 0:
            raise ValueError(f"collision_smooth must be >= 0, not {self.collision_smooth}")
        if self.influence_tolerance < 0 or self.collision_min_share < 0 or self.guard_radius <= 0:
            raise ValueError("influence_tolerance and collision_min_share must be >= 0, guard_radius > 0")
        if self.collision_estimator not in ("knn", "knn+logistic"):
            raise ValueError(f"unknown collision_estimator {self.collision_estimator!r}; use 'knn' or 'knn+logistic'")
        if self.collision_input not in INPUT_SPACES:
            raise ValueError(f"unknown collision_input {self.collision_input!r}; use one of {INPUT_SPACES}")
        unknown = set(self.collision_spaces) - {"input", "model"}
        if unknown:
            raise ValueError(f"unknown collision space(s) {sorted(unknown)}; use 'input' and/or 'model'")


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
