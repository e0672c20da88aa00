"""Models: plain networks and the task-aware classifier around them."""

from lifelong.models.cnn import CNN
from lifelong.models.heads import ContinualClassifier
from lifelong.models.mlp import MLP

__all__ = ["CNN", "MLP", "ContinualClassifier"]
