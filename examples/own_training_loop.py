"""Consolidation in your own training loop: three calls (four for SI, which also needs after_step).

    python examples/own_training_loop.py
"""

import torch
import torch.nn.functional as F

from lifelong.data import BatchLoader, TaskData, load_digits, permuted
from lifelong.models import MLP
from lifelong.strategies import build_strategy


def train(stream, strategy_name="ewc", options=None, epochs=3, seed=0, importance_data=None):
    torch.manual_seed(seed)
    model = MLP(64, (128,), 10)  # any nn.Module
    strategy = build_strategy(strategy_name, options or {"strength": 1000.0})
    shuffle = torch.Generator().manual_seed(seed)
    for task in stream:
        strategy.before_task(model, task.id)                          # 1. before a task
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(epochs):
            for batch in BatchLoader([TaskData(task.train, task.id)], 128, shuffle=True, generator=shuffle):
                loss = F.cross_entropy(model(batch.x), batch.y)
                optimizer.zero_grad()
                loss.backward()
                strategy.after_backward(model)                        # 2. adds the penalty's gradient
                optimizer.step()
                strategy.after_step(model)                            #    (SI integrates its path here)
        data = torch.utils.data.DataLoader(task.train, batch_size=256)  # any loader of (x, y)
        if importance_data is not None:
            data = importance_data(task)
        strategy.after_task(model, task.id, data)                     # 3. importance of what was learned
    return model


if __name__ == "__main__":
    stream = permuted(*load_digits(), num_tasks=3)
    model = train(stream, options={"strength": 100.0})
    with torch.no_grad():
        for task in stream:
            x, y = task.test.get_batch(torch.arange(len(task.test)))
            print(f"task {task.id}: accuracy {(model(x).argmax(1) == y).float().mean():.3f}")
