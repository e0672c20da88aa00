"""Kronecker factors against per-sample references; the Kronecker penalty, its merges and its state."""

import pytest
import torch
import torch.nn.functional as F
from test_importance import TinyText, _text_batches
from torch import nn

from lifelong.importance import fisher_diagonal
from lifelong.importance.kronecker import kronecker_factors, layer_inputs, layer_matrix
from lifelong.strategies import build_strategy
from lifelong.strategies.kronecker import KroneckerPenalty, nearest_kronecker


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1, stride=2)
        self.norm = nn.LayerNorm(3 * 4 * 4)
        self.fc = nn.Linear(3 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.norm(torch.relu(self.conv(x)).flatten(1)))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10))


def _reference(model, batches, kind_of):
    """Per sample, one backward pass each: A = mean over samples of the positions' mean a~ a~^T and
    G = mean of the positions' sum g g^T (empirical labels), for every Linear / Conv2d module."""
    modules = {n: m for n, m in model.named_modules() if n in kind_of}
    seen = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, (i[0], o)))
               for n, m in modules.items()]
    a_sum = {n: 0 for n in modules}
    g_sum = {n: 0 for n in modules}
    count = 0
    for x, y in batches:
        for i in range(len(y)):
            loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1], reduction="sum")
            outs = torch.autograd.grad(loss, [seen[n][1] for n in modules])
            for (n, m), g in zip(modules.items(), outs, strict=True):
                a = layer_inputs(m, kind_of[n], seen[n][0], m.bias is not None)[0]  # [L, in~]
                a_sum[n] = a_sum[n] + a.T @ a / a.shape[0]
                g2 = g[0].flatten(1).T if kind_of[n] == "conv2d" else g[0].reshape(-1, g.shape[-1])
                g_sum[n] = g_sum[n] + g2.T @ g2
            count += 1
    for h in handles:
        h.remove()
    return {n: (a_sum[n] / count, g_sum[n] / count) for n in modules}


def _close(a, b, rtol=1e-4):
    assert float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) < rtol


def test_one_sample_factors_are_the_exact_fisher_block(digits):
    """For one sample, vec(g a~^T) vec(g a~^T)^T is exactly A (x) G."""
    model = _mlp()
    x, y = digits[0].x[:1], digits[0].y[:1]
    factors, _ = kronecker_factors(model, [(x, y)], fisher="empirical")
    layer = model[3]
    loss = F.cross_entropy(model(x), y, reduction="sum")
    gw, gb = torch.autograd.grad(loss, [layer.weight, layer.bias])
    v = torch.cat([gw, gb.unsqueeze(1)], 1).T.flatten()  # column-major vec of [W b]'s gradient
    f = factors["3"]
    _close(torch.kron(f.A, f.G), torch.outer(v, v))


@pytest.mark.parametrize("model_kind", ["mlp", "conv"])
def test_factors_equal_the_per_sample_loop(digits, model_kind):
    model = _mlp() if model_kind == "mlp" else ConvNet()
    x, y = digits[0].x[:30], digits[0].y[:30]
    batches = [(x[:13], y[:13]), (x[13:], y[13:])]
    factors, diagonal = kronecker_factors(model, batches, fisher="empirical")
    kinds = {n: f.kind for n, f in factors.items()}
    assert set(kinds.values()) == ({"linear"} if model_kind == "mlp" else {"linear", "conv2d"})
    for n, (a, g) in _reference(model, batches, kinds).items():
        _close(factors[n].A, a)
        _close(factors[n].G, g)
    if model_kind == "conv":  # the LayerNorm falls back to its exact diagonal Fisher
        exact = fisher_diagonal(model, batches)
        assert sorted(diagonal) == ["norm.bias", "norm.weight"]
        for n in diagonal:
            _close(diagonal[n], exact[n])


def test_factors_are_refused_where_an_output_is_changed_in_place(digits):
    """A ReLU(inplace=True) after a Linear layer rewrites the tensor the hook saw: the gradient autograd
    gives for it is the ReLU's output gradient, not the layer's. The factors would be wrong, so refused."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(inplace=True), nn.Linear(12, 10))
    with pytest.raises(ValueError, match="changed in place"):
        kronecker_factors(model, [(digits[0].x[:8], digits[0].y[:8])], fisher="empirical")


def test_sequence_factors_and_embedding_fallback():
    model = TinyText()
    factors, diagonal = kronecker_factors(model, _text_batches(), fisher="empirical")
    assert set(factors) == {"mix", "head"} and set(diagonal) == {"embed.weight", "norm.weight", "norm.bias"}
    ref = _reference(model, _text_batches(), {"mix": "linear", "head": "linear"})
    for n in factors:
        _close(factors[n].A, ref[n][0])
        _close(factors[n].G, ref[n][1])
    exact = fisher_diagonal(model, _text_batches())
    for n in diagonal:
        _close(diagonal[n], exact[n])


def test_exact_factors_take_the_expectation_over_classes(digits):
    model = _mlp()
    x = digits[0].x[:20]
    factors, _ = kronecker_factors(model, [(x, torch.zeros(20, dtype=torch.long))], fisher="exact")
    p = torch.softmax(model(x), -1).detach()
    g_out = torch.zeros(10, 10)  # the output layer: g = p - e_c with probability p_c
    for n in range(20):
        for c in range(10):
            g = p[n] - F.one_hot(torch.tensor(c), 10)
            g_out += p[n, c] * torch.outer(g, g)
    _close(factors["3"].G, g_out / 20)
    many = [(x.repeat(300, 1, 1, 1), torch.zeros(6000, dtype=torch.long))]
    sampled, _ = kronecker_factors(model, many, fisher="true", generator=torch.Generator().manual_seed(0))
    assert float((sampled["3"].G - factors["3"].G).norm() / factors["3"].G.norm()) < 0.05


def _explicit(model, layers):
    """sum over layers of 1/2 vec(D)^T (A (x) G) vec(D) with column-major vec, per task, summed."""
    total = 0
    for name, tasks in layers.items():
        m = dict(model.named_modules())[name]
        w = layer_matrix(m.weight, m.bias)
        for a, g, anchor in tasks:
            v = (w - anchor).T.flatten()
            total = total + 0.5 * v @ torch.kron(a, g) @ v
    return total


def _random_psd(n, gen):
    m = torch.randn(n, n, generator=gen)
    return m @ m.T / n + 0.1 * torch.eye(n)


def test_penalty_and_its_gradient_equal_the_explicit_kronecker_quadratic():
    gen = torch.Generator().manual_seed(0)
    net = nn.Linear(4, 3)
    a, g = _random_psd(5, gen), _random_psd(3, gen)
    q = KroneckerPenalty(strength=1.0)
    from lifelong.importance.kronecker import LayerFactors

    q.add({"": LayerFactors("linear", a, g, True)}, {}, net)
    anchor = layer_matrix(net.weight, net.bias).detach().clone()
    with torch.no_grad():
        net.weight.add_(torch.randn(3, 4, generator=gen))
        net.bias.add_(torch.randn(3, generator=gen))
    expected = _explicit(net, {"": [(a, g, anchor)]})
    _close(q.value(net).detach(), expected.detach(), 1e-5)
    want = torch.autograd.grad(expected, [net.weight, net.bias])
    net.zero_grad()
    q.add_gradient_(net)
    _close(net.weight.grad, want[0], 1e-5)
    _close(net.bias.grad, want[1], 1e-5)


def _three_tasks(merge, proportional=False, online=False, size=(4, 3)):
    from lifelong.importance.kronecker import LayerFactors

    gen = torch.Generator().manual_seed(1)
    n_in, n_out = size
    net = nn.Linear(n_in, n_out)
    q = KroneckerPenalty(strength=1.0, merge=merge)
    tasks = []
    base_a, base_g = _random_psd(n_in + 1, gen), _random_psd(n_out, gen)
    for t in range(3):
        a, g = (base_a * (t + 1), base_g) if proportional else (_random_psd(n_in + 1, gen), _random_psd(n_out, gen))
        with torch.no_grad():
            net.weight.add_(0.3 * torch.randn(n_out, n_in, generator=gen))
            net.bias.add_(0.3 * torch.randn(n_out, generator=gen))
        q.add({"": LayerFactors("linear", a, g, True)}, {}, net, centred=not online)
        tasks.append((a, g, layer_matrix(net.weight, net.bias).detach().clone()))
    with torch.no_grad():
        net.weight.add_(0.5 * torch.randn(n_out, n_in, generator=gen))
    return net, q, tasks


@pytest.mark.parametrize("merge", ["nearest", "sum"])
def test_merges_are_exact_when_the_tasks_factors_are_proportional(merge):
    net, q, tasks = _three_tasks(merge, proportional=True)
    expected = _explicit(net, {"": tasks})
    _close(q.value(net).detach(), expected.detach(), 1e-4)
    want = torch.autograd.grad(expected, [net.weight, net.bias])
    net.zero_grad()
    q.add_gradient_(net)
    _close(net.weight.grad, want[0], 1e-4)
    _close(net.bias.grad, want[1], 1e-4)


def test_nearest_merge_is_no_farther_from_the_exact_sum_than_summed_factors():
    gen = torch.Generator().manual_seed(2)
    a = [_random_psd(6, gen) for _ in range(4)]
    g = [_random_psd(4, gen) for _ in range(4)]
    exact = sum(torch.kron(x, y) for x, y in zip(a, g, strict=True))
    merged_a, merged_g = a[0], g[0]
    for x, y in zip(a[1:], g[1:], strict=True):  # merged one task at a time, as the penalty does
        merged_a, merged_g = nearest_kronecker([merged_a, x], [merged_g, y], [1.0, 1.0])
    nearest = float((torch.kron(merged_a, merged_g) - exact).norm() / exact.norm())
    summed = float((torch.kron(sum(a), sum(g)) / 4 - exact).norm() / exact.norm())
    assert nearest <= summed + 1e-6
    one = nearest_kronecker([a[0], a[1]], [g[0], g[1]], [1.0, 1.0])  # one merge is the Frobenius optimum
    best = float((torch.kron(*one) - torch.kron(a[0], g[0]) - torch.kron(a[1], g[1])).norm())
    for w in (0.3, 0.5, 0.7):
        other = torch.kron(w * a[0] + (1 - w) * a[1], g[0] + g[1])
        assert best <= float((other - torch.kron(a[0], g[0]) - torch.kron(a[1], g[1])).norm()) + 1e-5
    assert torch.linalg.eigvalsh(one[0]).min() > 0 and torch.linalg.eigvalsh(one[1]).min() > 0


def test_online_form_centres_on_the_latest_solution():
    net, q, tasks = _three_tasks("nearest", online=True)
    layer = q.layers[""]
    assert torch.equal(layer["anchor"], tasks[-1][2]) and layer["force"].abs().max() == 0
    with torch.no_grad():
        net.weight.copy_(tasks[-1][2][:, :4])
        net.bias.copy_(tasks[-1][2][:, 4])
    assert float(q.value(net).detach()) == 0.0


def test_cheaper_step_keeps_the_top_curvature_and_the_tail_as_one_level():
    from lifelong.importance.kronecker import LayerFactors

    net = nn.Linear(30, 20, bias=False)
    a_values, g_values = torch.logspace(0, -4, 30), torch.logspace(0, -4, 20)
    q = KroneckerPenalty(strength=1.0, energy=0.9)
    q.add({"": LayerFactors("linear", torch.diag(a_values), torch.diag(g_values), False)}, {}, net)
    with torch.no_grad():
        net.weight.add_(1.0)
    row = q.protection()[0]
    ka, kg = row["rank_A"], row["rank_G"]
    assert ka < 30 and kg < 20 and 0.81 <= row["curvature_kept"] < 1
    net.zero_grad()
    q.add_gradient_(net)

    def approx(values, k):  # the top k exact, the rest at their mean: the trace is kept
        return torch.diag(torch.cat([values[:k], values[k:].mean().repeat(len(values) - k)]))

    _close(net.weight.grad, approx(g_values, kg) @ torch.ones(20, 30) @ approx(a_values, ka), 1e-5)


@pytest.mark.parametrize(("energy", "rank"), [(1.0, None), (0.5, None), (1.0, 4), (0.5, 2)])
def test_the_step_is_the_gradient_of_the_penalty_value_after_several_tasks(energy, rank):
    net, q, _ = _three_tasks("nearest", size=(30, 20))
    q.energy, q.rank = energy, rank
    q._steps = {}
    want = torch.autograd.grad(q.value(net), [net.weight, net.bias])
    net.zero_grad()
    q.add_gradient_(net)
    _close(net.weight.grad, want[0], 1e-4)
    _close(net.bias.grad, want[1], 1e-4)
    if energy < 1:
        row = q.protection()[0]
        assert row["rank_A"] < 31 and row["rank_G"] < 20
    if rank is not None:
        row = q.protection()[0]
        assert row["rank_A"] <= rank and row["rank_G"] <= rank and row["curvature_kept"] < 1


def test_strategy_state_round_trips_and_the_head_may_grow(split_digits):
    from lifelong.data import BatchLoader, TaskData
    from lifelong.models import MLP, ContinualClassifier

    torch.manual_seed(0)
    model = ContinualClassifier(MLP(64, (16,), 10), 5, 10)
    s = build_strategy("kfac-ewc", {"strength": 10.0, "samples": 64})
    s.after_task(model, 0, BatchLoader([TaskData(split_digits[0].train, 0)], 32))
    twin = build_strategy("kfac-ewc", {"strength": 10.0, "seed": 9})
    twin.load_state_dict(s.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    assert torch.equal(twin.penalty(model), s.penalty(model)) and float(s.penalty(model).detach()) > 0
    model.grow(12)  # the head gains two classes: their rows start unprotected
    model.zero_grad()
    s.after_backward(model)
    assert model.head.weight.grad[10:].abs().max() == 0 and model.head.weight.grad[:10].abs().max() > 0


def test_bad_options_are_refused():
    for options, match in [({"fisher": "batched"}, "fisher must be"), ({"merge": "mean"}, "merge must be"),
                           ({"energy": 0.0}, "energy must be"), ({"gamma": 2.0}, "gamma must be")]:
        with pytest.raises(ValueError, match=match):
            build_strategy("kfac-ewc", options)
    assert build_strategy("online-kfac-ewc").name == "online-kfac-ewc"
    with pytest.raises(ValueError, match="runs 2 times in one forward pass"):
        from test_importance import Shared

        kronecker_factors(Shared(), [(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))])


def test_a_run_reports_what_each_layer_keeps():
    from lifelong.data import StreamConfig
    from lifelong.learner import LearnerConfig
    from lifelong.run import ModelConfig, RunConfig, run

    r = run(RunConfig(StreamConfig("permuted-digits", tasks=2), "kfac-ewc+gpm", {"samples": 64},
                      LearnerConfig(epochs=1, batch_size=64), ModelConfig("mlp", (16,)), seed=0)).record
    kept = r["per_task"][-1]["protection"]
    assert set(kept) == {"kfac-ewc", "gpm"}
    assert [row["layer"] for row in kept["kfac-ewc"]] == ["net.layers.1", "net.layers.3"]
    assert all(row["curvature_kept"] == 1.0 and row["state_bytes"] > 0 for row in kept["kfac-ewc"])
    assert all(0 < row["input_space_share"] <= 1 for row in kept["gpm"])


def test_consolidation_bytes_count_kronecker_and_gpm_state(digits):
    """A run's `consolidation_bytes` counts what each strategy keeps, not only diagonal penalties."""
    from lifelong.reporting.importance import consolidation_bytes

    model = _mlp()
    batches = [(digits[0].x[:32], digits[0].y[:32])]
    kfac = build_strategy("online-kfac-ewc", {})
    kfac.after_task(model, 0, batches)
    assert consolidation_bytes(kfac) == kfac.kronecker.nbytes() > 0
    gpm = build_strategy("gpm", {})
    gpm.after_task(model, 0, batches)
    assert consolidation_bytes(gpm) == sum(b.nbytes for b in gpm.bases.values()) > 0
    both = build_strategy("kfac-ewc+replay", {})
    both.after_task(model, 0, batches)
    assert consolidation_bytes(both) == consolidation_bytes(kfac)
