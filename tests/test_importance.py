"""Every importance path equals the per-sample loop (the obvious reference), for every module type."""

import pytest
import torch
from torch import nn

from lifelong.data import BatchLoader, TaskData
from lifelong.importance import fisher_diagonal, output_sensitivity
from lifelong.models import MLP, ContinualClassifier


class Scale(nn.Module):
    """A module with no closed-form rule: forces the module-local vmap."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return torch.tanh(x * self.gain)


class Mixed(nn.Module):
    """Conv2d, LayerNorm, a generic module and Linear layers in one model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1, stride=2)
        self.norm = nn.LayerNorm(3 * 4 * 4)
        self.scale = Scale(3 * 4 * 4)
        self.fc = nn.Linear(3 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.scale(self.norm(torch.relu(self.conv(x)).flatten(1))))


class TinyText(nn.Module):
    """Embedding (with padding), LayerNorm and Linear over token sequences, mean-pooled."""

    def __init__(self, vocab=30, dim=8, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        h = self.mix(self.norm(self.embed(ids)))
        return self.head(torch.relu(h).mean(1))


class Shared(nn.Module):
    """One Linear used twice: no per-module identity applies; the whole-model vmap must."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


def _batches(stream, task_id, n=96):
    return list(BatchLoader([TaskData(stream[task_id].train, task_id)], 32, max_samples=n))


def _assert_close(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        scale = b[k].abs().max().clamp(min=1e-12)
        assert ((a[k] - b[k]).abs().max() / scale) < rtol, k


def _text_batches():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 30, (40, 7), generator=gen)
    ids[::3, 5:] = 0  # padded tails
    ids[1, :] = 4  # a sample that repeats one token
    y = torch.randint(0, 4, (40,), generator=gen)
    return [(ids[:25], y[:25]), (ids[25:], y[25:])]


@pytest.mark.parametrize("true_fisher", [False, True])
def test_fisher_paths_equal_loop_on_task_il_mlp(split_digits, true_fisher):
    model = ContinualClassifier(MLP(64, (32, 16), 10, dropout=0.3), 5, 10)
    model.set_class_mask(split_digits.class_mask(1))
    batches = _batches(split_digits, 1)
    results = {m: fisher_diagonal(model, batches, method=m, true_fisher=true_fisher,
                                  generator=torch.Generator().manual_seed(3)) for m in ("loop", "vmap", "auto")}
    _assert_close(results["vmap"], results["loop"])
    _assert_close(results["auto"], results["loop"])
    # task-IL: the output rows of other tasks' classes get no importance
    w = results["auto"][[n for n in results["auto"] if n.endswith("weight")][-1]]
    other = [c for c in range(10) if c not in split_digits[1].classes]
    assert w[other].abs().max() == 0 and w[list(split_digits[1].classes)].abs().max() > 0


@pytest.mark.parametrize("estimator", [fisher_diagonal, output_sensitivity])
def test_every_module_rule_equals_the_loop_on_a_model_mixing_them(digits, estimator):
    model = Mixed()
    x, y = digits[0].x[:40], digits[0].y[:40]
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    loop = estimator(model, batches, method="loop")
    _assert_close(estimator(model, batches, method="auto"), loop)
    _assert_close(estimator(model, batches, method="vmap", chunk_size=7), loop)


@pytest.mark.parametrize("estimator", [fisher_diagonal, output_sensitivity])
def test_sequence_rules_equal_the_loop(estimator):
    torch.manual_seed(0)
    model = TinyText()
    loop = estimator(model, _text_batches(), method="loop")
    auto = estimator(model, _text_batches(), method="auto")
    _assert_close(auto, loop)
    assert auto["embed.weight"][0].abs().max() == 0  # the padding row never trains


def test_shared_weights_fall_back_to_the_whole_model_vmap(digits):
    model = Shared()
    batches = [(digits[0].x[:30], digits[0].y[:30])]
    _assert_close(fisher_diagonal(model, batches, method="auto"), fisher_diagonal(model, batches, method="loop"))


class BroadcastPositions(nn.Module):
    """Position embeddings looked up once, shape [1, L, d], and broadcast over the batch (BERT's default)."""

    def __init__(self):
        super().__init__()
        self.tokens, self.positions, self.out = nn.Embedding(30, 6), nn.Embedding(7, 6), nn.Linear(6, 4)

    def forward(self, ids):
        h = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]).unsqueeze(0))
        return self.out(torch.tanh(h).mean(1))


def test_a_module_broadcast_over_the_batch_is_not_taken_for_per_sample():
    torch.manual_seed(0)
    model = BroadcastPositions()
    batches = _text_batches()
    loop = fisher_diagonal(model, batches, method="loop")
    _assert_close(fisher_diagonal(model, batches, method="auto"), loop)


def test_mas_paths_equal_loop(split_digits):
    model = ContinualClassifier(MLP(64, (32,), 10), 5, 10)
    model.set_class_mask(split_digits.class_mask(2))
    batches = _batches(split_digits, 2)
    loop = output_sensitivity(model, batches, method="loop")
    _assert_close(output_sensitivity(model, batches, method="vmap"), loop)
    _assert_close(output_sensitivity(model, batches, method="auto"), loop)


def test_frozen_parameters_get_no_importance(digits):
    model = Mixed()
    model.conv.requires_grad_(False)
    f = fisher_diagonal(model, [(digits[0].x[:10], digits[0].y[:10])])
    assert not any(k.startswith("conv.") for k in f) and "fc.weight" in f


def test_fisher_is_per_sample_not_squared_batch_mean(digits):
    torch.manual_seed(1)
    model = MLP(64, (32,), 10)
    x, y = digits[0].x[:64], digits[0].y[:64]
    exact = fisher_diagonal(model, [(x, y)])["layers.1.weight"].sum()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    batch_mean_squared = model.layers[1].weight.grad.pow(2).sum()
    assert exact > 5 * batch_mean_squared  # the mini-batch shortcut underestimates by about the batch size


def test_sample_budget_and_bad_arguments(digits):
    model = MLP(64, (8,), 10)
    x, y = digits[0].x[:50], digits[0].y[:50]
    budget = fisher_diagonal(model, [(x[:20], y[:20]), (x[20:], y[20:])], max_samples=25)
    _assert_close(budget, fisher_diagonal(model, [(x[:25], y[:25])]))
    with pytest.raises(ValueError, match="at least one sample"):
        fisher_diagonal(model, [])
    with pytest.raises(ValueError, match="unknown importance method"):
        fisher_diagonal(model, [(x, y)], method="fast")


def test_estimation_restores_training_mode(digits):
    model = MLP(64, (8,), 10, dropout=0.5)
    model.train()
    fisher_diagonal(model, [(digits[0].x[:10], digits[0].y[:10])])
    assert model.training


def test_in_place_ops_after_a_layer_do_not_corrupt_the_estimate(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Linear(32, 10))
    batches = [(digits[0].x[:40], digits[0].y[:40])]
    _assert_close(fisher_diagonal(model, batches), fisher_diagonal(model, batches, method="loop"))
