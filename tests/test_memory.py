import pytest
import torch
from scipy import stats

from lifelong.data import Batch
from lifelong.strategies.memory import ReplayMemory


def _batch(ids, labels=None):
    ids = torch.as_tensor(ids)
    y = torch.as_tensor(labels) if labels is not None else torch.zeros(len(ids), dtype=torch.long)
    return Batch(ids.float().unsqueeze(1), y, torch.zeros(len(ids), dtype=torch.long))


@pytest.mark.parametrize("batch_size", [1, 7])
def test_reservoir_keeps_every_sample_with_equal_probability(batch_size):
    n_items, capacity, trials = 60, 10, 1500
    counts = torch.zeros(n_items)
    for trial in range(trials):
        mem = ReplayMemory(capacity, "reservoir", torch.Generator().manual_seed(trial))
        for start in range(0, n_items, batch_size):
            mem.add(_batch(range(start, min(start + batch_size, n_items))))
        assert len(mem) == capacity
        counts[mem.x[:, 0].long()] += 1
    expected = trials * capacity / n_items
    _, p_value = stats.chisquare(counts.numpy(), [expected] * n_items)
    assert p_value > 1e-3, f"inclusion counts are not uniform (p={p_value:.2g})"


def test_balanced_memory_stays_balanced_and_within_budget():
    mem = ReplayMemory(30, "balanced", torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    for cls, n in [(0, 500), (1, 40), (2, 200)]:
        for start in range(0, n, 16):
            k = min(16, n - start)
            mem.add(_batch(torch.randint(0, 1000, (k,), generator=gen), [cls] * k))
        assert len(mem) <= 30
    counts = mem.class_counts()
    assert len(mem) == 30 and sorted(counts) == [0, 1, 2]
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_memory_state_round_trip_and_sampling():
    mem = ReplayMemory(8, "reservoir", torch.Generator().manual_seed(0))
    mem.add(_batch(range(20)))
    other = ReplayMemory(1, "reservoir", torch.Generator())
    other.load_state_dict(mem.state_dict())
    assert torch.equal(other.x[: len(other)], mem.x[: len(mem)]) and other.seen == 20
    assert torch.equal(other.sample(5).x, mem.sample(5).x)  # same generator state, same draw
    assert mem.nbytes == 8 * (4 + 8 + 8)
    with pytest.raises(ValueError, match="empty"):
        ReplayMemory(4).sample(2)
