"""lifelong: continual learning without catastrophic forgetting.

data -> task stream -> learner (model + strategy) -> accuracy matrix -> report.
"""

__version__ = "0.1.0"
