"""benchmarks/lm.py's facts bookkeeping: the share of earlier facts kept, computed from the saved
exact-match matrix, and its column in the facts table (pure functions of saved runs; no training)."""

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as the benchmark scripts import it

import lm  # noqa: E402


def _run(matrix: list[list[float]]) -> dict:
    """A saved facts run: row i = exact match of every batch after learning batch i (row/column 0:
    the general mixture, which has no exact match)."""
    scores = [[{"loss": 2.0}] + [{"exact_match": v} for v in row] for row in matrix]
    return {"config": {"model": "gpt-0.2m", "options": {}}, "method": "naive", "parameters": 1, "scores": scores,
            "stored_bytes": 0, "metrics": {"average_accuracy": 0.0, "learning_accuracy": 0.0,
                                           "average_retention": 0.0, "general_loss_ratio": 1.0}}


def test_facts_kept_is_the_share_of_earlier_just_learned_answers_still_given() -> None:
    # general row, then 3 batches: just learned 0.5, 0.0, 1.0 (the last batch does not count as earlier)
    matrix = [[0, 0, 0], [0.5, 0, 0], [0.5, 0.0, 0], [0.25, 0.5, 1.0]]
    # earlier batches 1 and 2: at the end 0.25 + 0.5, just learned 0.5 + 0.0
    assert math.isclose(lm._facts_kept(_run(matrix)), 0.75 / 0.5)
    assert math.isnan(lm._facts_kept(_run([[0, 0], [0.0, 0], [0.0, 1.0]])))  # nothing learned: undefined


def test_facts_table_has_the_kept_column() -> None:
    text = lm.table([_run([[0, 0], [0.5, 0], [0.25, 1.0]])], facts=True)
    head, _, row = text.splitlines()
    assert "earlier facts kept" in head and "loss rise" not in head
    assert row.split(" | ")[head.split(" | ").index("earlier facts kept")] == "0.500"
