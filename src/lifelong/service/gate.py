"""The promotion gate: a candidate replaces the current version only if it is shown not to forget.

Checks, on accuracies measured the same way for both models:

- every guard set (the held-out sets of the tasks already learned): candidate >= current - tolerance;
- the held-out part of the new feedback: candidate >= current.

The guard check is also what stops a forgetting attack: feedback crafted to make the model unlearn
an earlier task (old inputs with wrong labels, say) may pass every screen, but the candidate it
trains loses accuracy on that task's guard set and is not promoted; the failure says so.

`decide` returns the update report as a plain JSON-serialisable dict: the accuracy matrix (rows:
current and candidate; columns: the guard tasks and the new feedback), every check with its numbers,
a sentence for each failed one, and `reason`, the decision in one line.

>>> report = decide([0.95, 0.90, 0.10], [0.96, 0.85, 0.80], ["digits 0-1", "digits 2-3", "new"],
...                 [50, 50, 10], tolerance=0.01)
>>> report["passed"], report["failed"][0].split(";")[0]
(False, 'guard "digits 2-3": candidate 0.850 < current 0.900 - tolerance 0.010 = 0.890')
>>> report["reason"].split("; ")[1]
'it dropped 5.0 points: an update that makes the model forget an earlier task (a forgetting attack) is not promoted'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

DEFAULT_TOLERANCE = 0.01  # one accuracy point
FORGETTING = "an update that makes the model forget an earlier task (a forgetting attack) is not promoted"


def decide(current: Sequence[float], candidate: Sequence[float], names: Sequence[str], sizes: Sequence[int],
           tolerance: float = DEFAULT_TOLERANCE, current_name: str = "current",
           candidate_name: str = "candidate") -> dict[str, Any]:
    """Gate a candidate. The last column is the held-out part of the new feedback; the others are
    guard sets. Returns the report dict (``passed``, ``checks``, ``failed``, ``accuracy_matrix``)."""
    if not len(current) == len(candidate) == len(names) == len(sizes) >= 1:
        raise ValueError("current, candidate, names and sizes must have the same length (>= 1)")
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance must be in [0, 1], not {tolerance}")
    checks, failed = [], []
    last = len(names) - 1
    for j, (cur, cand) in enumerate(zip(current, candidate, strict=True)):
        guard = j < last
        threshold = cur - tolerance if guard else cur
        # a tiny epsilon: accuracies are ratios of counts, and equal counts must pass
        ok = cand >= threshold - 1e-9
        checks.append({"check": "guard" if guard else "new feedback", "task": j, "name": names[j],
                       "size": int(sizes[j]), "current": float(cur), "candidate": float(cand),
                       "threshold": float(threshold), "passed": bool(ok)})
        if not ok:
            failed.append(f'guard "{names[j]}": candidate {cand:.3f} < current {cur:.3f} - tolerance '
                          f"{tolerance:.3f} = {threshold:.3f}; it dropped {100 * (cur - cand):.1f} points: "
                          f"{FORGETTING}" if guard else
                          f"new feedback (held out, {sizes[j]} examples): candidate {cand:.3f} < current {cur:.3f}")
    return {
        "passed": not failed,
        "tolerance": tolerance,
        "checks": checks,
        "failed": failed,
        "reason": reason(failed),
        "accuracy_matrix": {"rows": [current_name, candidate_name], "columns": list(names),
                            "values": [[float(v) for v in current], [float(v) for v in candidate]]},
    }


def reason(failed: Sequence[str]) -> str:
    """The decision in one line: every failed check's sentence, or that every check passed."""
    return "; ".join(failed) if failed else "every check passed"


def split_holdout(labels: Sequence[str], share: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train positions, held-out positions) of feedback examples: per label, `share` of its examples
    (at least one when it has two or more) are held out for the gate, drawn by `seed`; if that holds
    out nothing (every label seen once), `share` of all examples (at least one) are. At least one
    example is always left to train on.

    >>> split_holdout(["a", "a", "a", "a", "a", "b", "b"], 0.2, seed=0)
    ([0, 1, 2, 3, 5], [4, 6])
    """
    if not 0 < share < 1:
        raise ValueError(f"the held-out share must be in (0, 1), not {share}")
    generator = torch.Generator().manual_seed(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    held: list[int] = []
    for positions in by_label.values():
        if len(positions) >= 2:
            k = min(len(positions) - 1, max(1, round(share * len(positions))))  # something left to train on
            order = torch.randperm(len(positions), generator=generator)[:k]
            held += [positions[i] for i in order.tolist()]
    if not held and len(labels) >= 2:
        k = min(len(labels) - 1, max(1, round(share * len(labels))))
        held = torch.randperm(len(labels), generator=generator)[:k].tolist()
    chosen = set(held)
    return [i for i in range(len(labels)) if i not in chosen], sorted(chosen)
