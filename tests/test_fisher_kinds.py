"""The exact and the batched Fisher against per-sample references computed the obvious way."""

import pytest
import torch
import torch.nn.functional as F
from test_importance import Mixed, TinyText, _assert_close, _text_batches
from torch import nn

from lifelong.importance import fisher_diagonal
from lifelong.models import MLP, ContinualClassifier
from lifelong.strategies import build_strategy


def _exact_reference(model, batches, task=None):
    """sum_c p_c (d log p_c / d theta)^2 per sample, one backward pass per (sample, class), averaged."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, y in batches:
        for i in range(len(y)):
            logits = model(x[i:i + 1], task[:1]) if task is not None else model(x[i:i + 1])
            logp = torch.log_softmax(logits, -1)[0]
            p = logp.exp().detach()
            for c in range(len(p)):
                if p[c] == 0:
                    continue
                grads = torch.autograd.grad(logp[c], list(params.values()), retain_graph=True, allow_unused=True)
                for n, g in zip(params, grads, strict=True):
                    if g is not None:
                        total[n] += p[c] * g ** 2
            count += 1
    return {n: t / count for n, t in total.items()}


def _batched_reference(model, x, y, batch_size):
    """Mean over mini-batches of (mean over the batch of the per-sample gradients)^2."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    starts = range(0, len(y), batch_size)
    for s in starts:
        mean = {n: torch.zeros_like(p) for n, p in params.items()}
        xs, ys = x[s:s + batch_size], y[s:s + batch_size]
        for i in range(len(ys)):
            loss = F.cross_entropy(model(xs[i:i + 1]), ys[i:i + 1])
            for n, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
                mean[n] += g / len(ys)
        for n in total:
            total[n] += mean[n] ** 2
    return {n: t / len(starts) for n, t in total.items()}


@pytest.mark.parametrize("method", ["auto", "vmap", "loop"])
def test_exact_fisher_equals_the_expectation_over_classes(digits, method):
    torch.manual_seed(0)
    model = Mixed().eval()
    x, y = digits[0].x[:24], digits[0].y[:24]
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    _assert_close(fisher_diagonal(model, batches, fisher="exact", method=method), _exact_reference(model, batches))


def test_exact_fisher_on_sequences_and_embeddings():
    torch.manual_seed(0)
    model = TinyText().eval()
    batches = _text_batches()
    _assert_close(fisher_diagonal(model, batches, fisher="exact"), _exact_reference(model, batches))


def test_exact_fisher_skips_masked_classes_without_nan(split_digits):
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(64, (16,), 10), 5, 10).eval()
    model.set_class_mask(split_digits.class_mask(1))
    x, y = split_digits[1].train.get_batch(torch.arange(20))
    task = torch.full((20,), 1)
    exact = fisher_diagonal(model, [(x, y, task)], fisher="exact")
    assert all(torch.isfinite(v).all() for v in exact.values())
    _assert_close(exact, _exact_reference(model, [(x, y)], task))
    head = exact["net.layers.3.weight"]
    other = [c for c in range(10) if c not in split_digits[1].classes]
    assert head[other].abs().max() == 0 and head[list(split_digits[1].classes)].abs().max() > 0


def test_exact_fisher_is_the_mean_of_many_sampled_ones(digits):
    """The 'true' Fisher draws one label per sample: averaged over many draws it tends to the exact one."""
    torch.manual_seed(0)
    model = MLP(64, (8,), 10)
    x, y = digits[0].x[:16], digits[0].y[:16]
    exact = fisher_diagonal(model, [(x, y)], fisher="exact")
    many = [(x.repeat(400, 1, 1, 1), y.repeat(400))]
    sampled = fisher_diagonal(model, many, fisher="true", generator=torch.Generator().manual_seed(0))
    for n in exact:
        assert float((sampled[n] - exact[n]).norm() / exact[n].norm()) < 0.1, n


@pytest.mark.parametrize("batch_size", [8, 7])
def test_batched_fisher_squares_each_mini_batch_mean(digits, batch_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    x, y = digits[0].x[:32], digits[0].y[:32]
    # the caller's batches (16 each) are cut into mini-batches of batch_size; 7 leaves partial ones
    batched = fisher_diagonal(model, [(x[:16], y[:16]), (x[16:], y[16:])], fisher="batched", batch_size=batch_size)
    ref = {n: (_batched_reference(model, x[:16], y[:16], batch_size)[n] * len(range(0, 16, batch_size))
               + _batched_reference(model, x[16:], y[16:], batch_size)[n] * len(range(0, 16, batch_size)))
           / (2 * len(range(0, 16, batch_size))) for n in dict(model.named_parameters())}
    _assert_close(batched, ref)
    per_sample = fisher_diagonal(model, [(x, y)])
    assert sum(v.sum() for v in per_sample.values()) > 3 * sum(v.sum() for v in batched.values())


def test_bad_fisher_options_are_refused(digits):
    model = MLP(64, (8,), 10)
    with pytest.raises(ValueError, match="unknown fisher"):
        fisher_diagonal(model, [(digits[0].x[:4], digits[0].y[:4])], fisher="hessian")
    with pytest.raises(ValueError, match="batch_size"):
        fisher_diagonal(model, [(digits[0].x[:4], digits[0].y[:4])], fisher="batched", batch_size=0)
    with pytest.raises(ValueError, match="fisher must be one of"):
        build_strategy("ewc", {"fisher": "hessian"})
    assert build_strategy("ewc", {"fisher": "exact"}).config.fisher == "exact"
