"""Models: plain networks, the task-aware classifier around them, and the one factory that builds them."""

from lifelong.models.cnn import CNN
from lifelong.models.factory import ModelConfig, NetworkSpec, build_model, model_for, network_spec
from lifelong.models.heads import ContinualClassifier
from lifelong.models.mlp import MLP

__all__ = ["CNN", "MLP", "ContinualClassifier", "ModelConfig", "NetworkSpec", "build_model", "model_for",
           "network_spec"]
