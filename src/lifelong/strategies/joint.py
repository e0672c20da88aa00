"""Joint training, the upper bound: while learning task t, train on the data of tasks 0..t
together (continuing from the previous model), as if nothing had to be forgotten."""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.data.task import TaskData, TaskStream
from lifelong.strategies.base import Strategy, StrategyConfig


@dataclass
class JointConfig(StrategyConfig):
    pass


class Joint(Strategy):
    name = "joint"

    def __init__(self, config: JointConfig | None = None):
        self.config = config or JointConfig()

    def train_data(self, stream: TaskStream, task_id: int) -> list[TaskData]:
        return [TaskData(stream[k].train, k) for k in range(task_id + 1)]
