"""Agents that learn control tasks by interacting with environments, through the strategy hooks."""

from lifelong.agents.dqn import DQNAgent, DQNConfig

__all__ = ["DQNAgent", "DQNConfig"]
