"""Evaluation: pure metric functions and the `AccuracyMatrix` that feeds them."""

from lifelong.evaluation.functional import (
    average_accuracy,
    average_retention,
    backward_transfer,
    forgetting,
    forward_transfer,
    learning_accuracy,
    specialist_retention,
    summary,
)
from lifelong.evaluation.matrix import AccuracyMatrix

__all__ = ["AccuracyMatrix", "average_accuracy", "average_retention", "backward_transfer", "forgetting",
           "forward_transfer", "learning_accuracy", "specialist_retention", "summary"]
