"""Quarantine: the screens of `lifelong.screening` applied to the feedback an update has taken.

The worker calls `screen_feedback` before it trains, with the current version's model (its
penultimate features and softmax) and its guard sets as the trusted reference. An example any
screen flags is *held*: it is not trained on, and it waits, with the screens' reasons, for a
maintainer to approve it (the next update trains on it) or reject it (never trained on).
Examples a maintainer already approved are not screened again.

A source is who sent an example: its API key (``key:ID``). The free-text `source` field of a
request is only used for examples stored without a key; a key cannot split itself into many
sources to get past the per-source share cap or the neighbours' vote per source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from lifelong.checkpoint import SavedModel
from lifelong.screening import SCREENS, ScreenConfig, screen_model

# the command line names the screens as `lifelong.screening` reports them; the config has one flag each
FLAGS = {"source-share": "source_limits", "label-noise": "label_noise", "source-outlier": "source_outliers",
         "backdoor": "backdoor", "label-collision": "label_collisions", "guard-agreement": "guard_agreement",
         "influence": "influence"}


class FeedbackRow(Protocol):
    id: int
    label: str
    key_id: int | None
    source: str | None
    status: str


@dataclass
class Screened:
    """What the screens decided about one update's feedback: `held` maps a feedback id to its
    reasons (``[{"screen", "reason", "score"}]``); `report` goes into the update report."""

    held: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def add(self, rows: Sequence[FeedbackRow], held: dict[int, str], screen: str = "influence") -> None:
        """Hold more examples (positions into `rows`, with a reason each), found after the screens ran
        (the influence check at the gate), and count them in the report."""
        if not held:
            return
        for position, why in held.items():
            self.held.setdefault(rows[position].id, []).append({"screen": screen, "reason": why, "score": 1.0})
        by_screen = dict(self.report.get("held_by_screen", {}))
        by_screen[screen] = by_screen.get(screen, 0) + len(held)
        self.report.update(held=len(self.held), held_ids=sorted(self.held), held_by_screen=by_screen)


def screen_config(screens: Sequence[str], max_source_share: float | None = None) -> ScreenConfig | None:
    """The `ScreenConfig` running only `screens` (names from `lifelong.screening.SCREENS`); None when
    the list is empty (screening off). ValueError for an unknown name."""
    unknown = sorted(set(screens) - set(FLAGS))
    if unknown:
        raise ValueError(f"unknown screen(s) {', '.join(unknown)}; choose from {', '.join(SCREENS)}")
    if not screens:
        return None
    config = ScreenConfig()
    for name, flag in FLAGS.items():
        setattr(config, flag, name in screens)
    if max_source_share is not None:
        if not 0 < max_source_share <= 1:
            raise ValueError(f"the source share cap must be in (0, 1], not {max_source_share}")
        config.max_source_share = max_source_share
    return config


def source_of(row: FeedbackRow) -> str | None:
    return f"key:{row.key_id}" if row.key_id is not None else row.source


def screen_feedback(parent: SavedModel, x: Tensor, rows: Sequence[FeedbackRow], config: ScreenConfig) -> Screened:
    """Screen the update's feedback (`x`: its model inputs, one row per feedback row) with the
    representations of `parent`, the current version, before anything trains it."""
    spec = parent.spec
    todo = [i for i, r in enumerate(rows) if r.status != "approved"]
    approved = [rows[i].id for i in range(len(rows)) if rows[i].status == "approved"]
    report: dict[str, Any] = {"screens": [n for n, flag in FLAGS.items() if getattr(config, flag)],
                              "examples": len(todo), "approved_ids": approved}
    if not todo:
        return Screened({}, {**report, "held": 0, "held_ids": [], "held_by_screen": {}})
    learned = sorted({int(c) for task in spec.tasks for c in task["classes"]})
    reference = None
    if parent.guards:  # the guard sets: held-out examples of the learned tasks, labelled by the service itself
        ref_x = torch.cat([gx for gx, _ in parent.guards])
        ref_labels = [spec.labels[int(c)] for _, gy in parent.guards for c in gy]
        reference = (ref_x, ref_labels)
    picked = torch.tensor(todo, dtype=torch.long)
    result = screen_model(parent.model, x[picked], [rows[i].label for i in todo], [source_of(rows[i]) for i in todo],
                          spec.labels, learned, reference, config, ids=[rows[i].id for i in todo])
    held: dict[int, list[dict[str, Any]]] = {}
    for feedback_id, holds in result.by_id().items():
        held[int(feedback_id)] = [{"screen": h.screen, "reason": h.reason, "score": round(h.score, 4)}
                                  for h in holds]
    summary = result.to_dict()
    report.update(held=len(held), held_ids=sorted(held), held_by_screen=summary["held_by_screen"],
                  seconds=summary["seconds"])
    return Screened(held, report)
