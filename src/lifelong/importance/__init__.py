"""Importance of each parameter: the diagonal Fisher (EWC) and output sensitivity (MAS), exact."""

from lifelong.importance.estimate import FISHERS, METHODS, Importance, as_batch, fisher_diagonal, output_sensitivity

__all__ = ["FISHERS", "METHODS", "Importance", "as_batch", "fisher_diagonal", "output_sensitivity"]
