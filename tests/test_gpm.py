"""Gradient projection memory: its bases, its guarantee under SGD, what Adam does to it, its state."""

import pytest
import torch

from lifelong.data import BatchLoader, TaskData
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.strategies import build_strategy
from lifelong.strategies.gpm import extend_basis


def test_extend_basis_explains_the_threshold_counting_what_the_basis_already_holds():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    x = torch.randn(400, 6, generator=gen) * scales
    m, share = extend_basis(None, x, 0.9)
    energy = (x.double() ** 2).sum(0)
    assert share >= 0.9 and m.shape[1] < 6
    assert torch.allclose(m.T @ m, torch.eye(m.shape[1]), atol=1e-5)
    # a second "task" in the same space: most of its energy is explained already, little is added
    y = torch.randn(400, 6, generator=gen) * scales
    m2, share2 = extend_basis(m, y, 0.9)
    assert m2.shape[1] == m.shape[1] and share2 >= 0.9
    # a task in a new direction adds it
    z = torch.zeros(400, 6)
    z[:, 5] = torch.randn(400, generator=gen)
    m3, share3 = extend_basis(m, z, 0.99)
    assert m3.shape[1] == m.shape[1] + 1 and share3 >= 0.99
    assert torch.allclose(m3.T @ m3, torch.eye(m3.shape[1]), atol=1e-5)
    assert float(energy[: m.shape[1]].sum() / energy.sum()) > 0.5


def _fit_two_tasks(stream, optimizer, project):
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(64, (32,), 10), len(stream), 10)
    strategy = build_strategy("gpm", {"threshold": 0.99, "samples": 200, "project": project})
    learner = Learner(model, strategy, LearnerConfig(epochs=2, batch_size=32, optimizer=optimizer,
                                                     lr=0.05 if optimizer == "sgd" else 1e-3))
    learner.fit(stream, 0)
    x0, _ = stream[0].train.get_batch(torch.arange(200))
    with torch.no_grad():
        hidden = model.net.layers[1](x0.flatten(1))  # the first layer's output on task 0's own inputs
    learner.fit(stream, 1)
    with torch.no_grad():
        after = model.net.layers[1](x0.flatten(1))
    first = next(n for n in strategy.bases)
    return float((after - hidden).norm() / hidden.norm()), strategy.drift[first][0], strategy


def test_sgd_with_projected_gradients_leaves_earlier_inputs_outputs_unchanged(permuted_digits):
    change, drift, _ = _fit_two_tasks(permuted_digits, "sgd", "gradient")
    assert drift < 1e-6  # nothing of the weight change lies in the protected subspace
    assert change < 0.06  # what is left: the 1 % of task 0's input energy outside the basis (0.028 here)


def test_adam_leaks_into_the_protected_subspace_unless_the_update_is_projected(permuted_digits):
    _, drift_gradient, _ = _fit_two_tasks(permuted_digits, "adam", "gradient")
    change_update, drift_update, _ = _fit_two_tasks(permuted_digits, "adam", "update")
    assert drift_gradient > 100 * max(drift_update, 1e-9)
    assert drift_update < 1e-6 and change_update < 0.08  # 0.04 here, against 0.14 with projected gradients


def test_protection_report_and_state_round_trip(permuted_digits):
    _, _, strategy = _fit_two_tasks(permuted_digits, "sgd", "gradient")
    rows = strategy.protection()
    assert [r["layer"] for r in rows] == list(strategy.bases)
    assert all(0 < r["input_space_share"] <= 1 and r["energy_explained"] >= 0.99 for r in rows)
    twin = build_strategy("gpm", {"threshold": 0.99, "project": "gradient"})
    twin.load_state_dict(strategy.state_dict())
    assert all(torch.equal(twin.bases[n], strategy.bases[n]) for n in strategy.bases)
    model = ContinualClassifier(MLP(64, (32,), 10), 3, 10)
    b = next(iter(BatchLoader([TaskData(permuted_digits[2].train, 2)], 16)))
    grads = []
    for s in (strategy, twin):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(b.x, b.task), b.y).backward()
        s.after_backward(model)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(g1, g2) for g1, g2 in zip(*grads, strict=True))


def test_thresholds_per_layer_and_raised_per_task(permuted_digits):
    s = build_strategy("gpm", {"threshold": [0.5, 0.9], "threshold_step": 0.1})
    assert s._threshold(0) == 0.5 and s._threshold(1) == 0.9 and s._threshold(5) == 0.9
    s.tasks = 2
    assert s._threshold(0) == pytest.approx(0.7) and s._threshold(1) == 1.0
    for options, match in [({"threshold": 1.5}, "threshold"), ({"project": "both"}, "project"),
                           ({"samples": 0}, "samples"), ({"threshold_step": -0.1}, "threshold_step")]:
        with pytest.raises(ValueError, match=match):
            build_strategy("gpm", options)
