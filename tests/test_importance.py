"""Every importance path equals the per-sample loop (the obvious reference)."""

import pytest
import torch
from torch import nn

from lifelong.data import BatchLoader, TaskData
from lifelong.importance import fisher_diagonal, output_sensitivity
from lifelong.models import MLP, ContinualClassifier


class Mixed(nn.Module):
    """Linear layers plus a parameter the Linear identity does not cover (forces vmap)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _batches(stream, task_id, n=96):
    data = stream[task_id].train
    return list(BatchLoader([TaskData(data, task_id)], 32, max_samples=n))


def _assert_close(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        scale = b[k].abs().max().clamp(min=1e-12)
        assert ((a[k] - b[k]).abs().max() / scale) < rtol, k


@pytest.mark.parametrize("true_fisher", [False, True])
def test_fisher_paths_equal_loop_on_task_il_mlp(split_digits, true_fisher):
    model = ContinualClassifier(MLP(64, (32, 16), 10, dropout=0.3), 5, 10)
    model.set_class_mask(split_digits.class_mask(1))
    batches = _batches(split_digits, 1)
    results = {m: fisher_diagonal(model, batches, method=m, true_fisher=true_fisher,
                                  generator=torch.Generator().manual_seed(3)) for m in ("loop", "vmap", "fast")}
    _assert_close(results["vmap"], results["loop"])
    _assert_close(results["fast"], results["loop"])
    # task-IL: the output rows of other tasks' classes get no importance
    w = results["fast"][[n for n in results["fast"] if n.endswith("weight")][-1]]
    other = [c for c in range(10) if c not in split_digits[1].classes]
    assert w[other].abs().max() == 0 and w[list(split_digits[1].classes)].abs().max() > 0


def test_fisher_vmap_equals_loop_when_the_fast_path_does_not_apply(digits):
    model = Mixed()
    x, y = digits[0].x[:40], digits[0].y[:40]
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    loop = fisher_diagonal(model, batches, method="loop")
    _assert_close(fisher_diagonal(model, batches, method="vmap", chunk_size=7), loop)
    _assert_close(fisher_diagonal(model, batches, method="auto"), loop)
    with pytest.raises(ValueError, match="fast path"):
        fisher_diagonal(model, batches, method="fast")


def test_mas_paths_equal_loop(split_digits):
    model = ContinualClassifier(MLP(64, (32,), 10), 5, 10)
    model.set_class_mask(split_digits.class_mask(2))
    batches = _batches(split_digits, 2)
    loop = output_sensitivity(model, batches, method="loop")
    _assert_close(output_sensitivity(model, batches, method="vmap"), loop)
    _assert_close(output_sensitivity(model, batches, method="fast"), loop)


def test_fisher_is_per_sample_not_squared_batch_mean(digits):
    torch.manual_seed(1)
    model = MLP(64, (32,), 10)
    x, y = digits[0].x[:64], digits[0].y[:64]
    exact = fisher_diagonal(model, [(x, y)])["layers.1.weight"].sum()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    batch_mean_squared = model.layers[1].weight.grad.pow(2).sum()
    assert exact > 5 * batch_mean_squared  # the mini-batch shortcut underestimates by about the batch size


def test_sample_budget_and_empty_data(digits):
    model = MLP(64, (8,), 10)
    x, y = digits[0].x[:50], digits[0].y[:50]
    budget = fisher_diagonal(model, [(x[:20], y[:20]), (x[20:], y[20:])], max_samples=25)
    _assert_close(budget, fisher_diagonal(model, [(x[:25], y[:25])]))
    with pytest.raises(ValueError, match="at least one sample"):
        fisher_diagonal(model, [])


def test_estimation_restores_training_mode(digits):
    model = MLP(64, (8,), 10, dropout=0.5)
    model.train()
    fisher_diagonal(model, [(digits[0].x[:10], digits[0].y[:10])])
    assert model.training
