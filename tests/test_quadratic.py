"""The merged quadratic equals the per-task sum; SI's importance equals a hand-computed path integral."""

import torch
from torch import nn

from lifelong.strategies import SI, QuadraticPenalty, SIConfig


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def test_merged_ewc_penalty_and_gradient_equal_the_per_task_sum():
    net = _net()
    names = [n for n, _ in net.named_parameters()]
    gen = torch.Generator().manual_seed(1)
    tasks = [({n: torch.rand(p.shape, generator=gen) * (t + 1) for n, p in net.named_parameters()},
              {n: torch.randn(p.shape, generator=gen) for n, p in net.named_parameters()}) for t in range(6)]
    for n in names:  # a parameter no task cares about (zero precision everywhere)
        tasks[0][0][n].view(-1)[0] = 0.0
        for fisher, _ in tasks[1:]:
            fisher[n].view(-1)[0] = 0.0
    strength = 7.0
    q = QuadraticPenalty(strength)
    for fisher, anchor in tasks:
        q.add(fisher, anchor)

    params = dict(net.named_parameters())
    reference = sum(0.5 * strength * (f[n] * (params[n] - a[n]) ** 2).sum() for f, a in tasks for n in names)
    net.zero_grad()
    reference.backward()
    expected = {n: p.grad.clone() for n, p in params.items()}

    assert torch.isclose(q.value(net), reference.detach(), rtol=1e-5)
    net.zero_grad()
    q.add_gradient_(net)
    for n, p in params.items():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-6)
    # state stays two tensors per parameter, whatever the number of tasks
    assert len(q.precision) == len(q.centre) == len(names)


def test_online_accumulation_decays_and_recentres():
    net = _net()
    f1 = {n: torch.ones_like(p) for n, p in net.named_parameters()}
    a1 = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    a2 = {n: torch.full_like(p, 2.0) for n, p in net.named_parameters()}
    q = QuadraticPenalty(1.0)
    q.accumulate(f1, a1, decay=0.5)
    q.accumulate(f1, a2, decay=0.5)
    for p, m in zip(q.precision, q.centre, strict=True):
        assert torch.allclose(p, torch.full_like(p, 1.5)) and torch.allclose(m, torch.full_like(m, 2.0))


def test_penalty_is_zero_at_its_centre_after_a_single_task():
    net = _net()
    q = QuadraticPenalty(3.0)
    q.add({n: torch.rand_like(p) for n, p in net.named_parameters()},
          {n: p.detach().clone() for n, p in net.named_parameters()})
    assert abs(float(q.value(net).detach())) < 1e-12  # zero up to the rounding of c / P


def test_si_importance_equals_hand_computed_path_integral():
    """Loss 1/2 sum a_i (theta_i - c_i)^2 with SGD: the path integral is sum_k lr * g_k^2 in closed form."""
    a = torch.tensor([1.0, 4.0, 0.5])
    c = torch.tensor([2.0, -1.0, 3.0])
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.5, -1.0]]))
    lr, steps, xi = 0.1, 12, 0.1
    si = SI(SIConfig(strength=1.0, xi=xi))
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    theta = model.weight.detach().clone().squeeze(0)
    start, omega = theta.clone(), torch.zeros(3)
    for _ in range(steps):  # the hand computation
        g = a * (theta - c)
        omega += lr * g * g  # -g * (theta_next - theta) with theta_next = theta - lr * g
        theta = theta - lr * g
    expected = omega / ((theta - start) ** 2 + xi)

    si.before_task(model, 0)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a * (model.weight.squeeze(0) - c) ** 2).sum()).backward()
        si.after_backward(model)
        opt.step()
        si.after_step(model)
    si.after_task(model, 0, [])
    torch.testing.assert_close(model.weight.detach().squeeze(0), theta)
    torch.testing.assert_close(si.quadratic.precision[0].squeeze(0), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(si.quadratic.centre[0].squeeze(0), theta)


def _two_tasks(storage="fp32", keep=1.0, tasks=2):
    net = _net()
    gen = torch.Generator().manual_seed(2)
    q = QuadraticPenalty(5.0, storage, keep)
    for _ in range(tasks):
        q.add({n: torch.rand(p.shape, generator=gen) for n, p in net.named_parameters()},
              {n: torch.randn(p.shape, generator=gen) for n, p in net.named_parameters()})
    return net, q


def _closed_form_matches_autograd(net, q):
    net.zero_grad()
    q.value(net).backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    q.add_gradient_(net)
    for p, e in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)


def test_every_storage_adds_the_gradient_of_its_own_penalty():
    for storage, keep in (("fp32", 1.0), ("bf16", 1.0), ("fp32", 0.1), ("bf16", 0.5)):
        _closed_form_matches_autograd(*_two_tasks(storage, keep))


def test_bf16_and_sparse_storage_approximate_the_dense_penalty():
    net, dense = _two_tasks()
    _, half = _two_tasks("bf16")
    assert torch.isclose(half.value(net), dense.value(net), rtol=1e-2)
    assert half.nbytes() < 0.8 * dense.nbytes()
    _, dense = _two_tasks(tasks=1)
    _, sparse = _two_tasks("fp32", 0.1, tasks=1)
    for p_sparse, p_dense in zip(sparse.precision, dense.precision, strict=True):
        kept = p_sparse > 0
        assert kept.sum() == max(1, -(-p_dense.numel() // 10))  # ceil(10 %) of the entries
        assert p_dense[kept].min() >= p_dense[~kept].max()  # the largest ones
        torch.testing.assert_close(p_sparse[kept], p_dense[kept])
    assert sparse.nbytes() < 0.35 * dense.nbytes()  # 12 bytes per kept entry, rounding up per tensor


def test_dense_state_is_two_floats_per_parameter():
    net, q = _two_tasks()
    assert q.nbytes() == 2 * 4 * sum(p.numel() for p in net.parameters())


def test_the_penalty_follows_an_output_layer_that_gains_classes():
    from lifelong.models import MLP, ContinualClassifier

    torch.manual_seed(0)
    model = ContinualClassifier(MLP(3, (4,), 2), 1, 2)
    q = QuadraticPenalty(2.0)
    q.add({n: torch.ones_like(p) for n, p in model.named_parameters()},
          {n: p.detach().clone() for n, p in model.named_parameters()})
    model.grow(5, num_tasks=2)
    assert model.head.weight.shape == (5, 4) and model.class_mask.shape == (2, 5)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    # the three new rows are free; the two old rows pay 1 per entry: 2/2 * (2 * 4 + 2 * 1)... bias unchanged
    assert torch.isclose(q.value(model).detach(), torch.tensor(2.0 / 2 * 2 * 4))
    model.zero_grad()
    q.add_gradient_(model)
    assert model.head.weight.grad[2:].abs().max() == 0 and model.head.weight.grad[:2].abs().min() > 0
    q.add({n: torch.ones_like(p) for n, p in model.named_parameters()},
          {n: p.detach().clone() for n, p in model.named_parameters()})  # the next task covers every row
    assert q.precision[-2].shape == (5, 4)


def test_bf16_storage_adds_its_gradient_chunk_by_chunk_across_chunk_boundaries():
    from lifelong.strategies import quadratic

    net = torch.nn.Linear(300, 500)  # 150,000 weights: three chunks, the last one short
    assert net.weight.numel() > 2 * quadratic._CHUNK
    gen = torch.Generator().manual_seed(3)
    q = QuadraticPenalty(0.7, "bf16")
    q.add({n: torch.rand(p.shape, generator=gen) for n, p in net.named_parameters()},
          {n: torch.randn(p.shape, generator=gen) for n, p in net.named_parameters()})
    _closed_form_matches_autograd(net, q)
