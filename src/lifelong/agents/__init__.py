"""Agents that learn control tasks by interacting with environments, through the strategy hooks."""

from lifelong.agents.dqn import DQNAgent, DQNConfig
from lifelong.agents.ppo import PPOAgent, PPOConfig

__all__ = ["DQNAgent", "DQNConfig", "PPOAgent", "PPOConfig"]
