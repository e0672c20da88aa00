"""The GPT: shapes, causality, sizes, and its exact per-sample importance over token sequences."""

import pytest
import torch

from lifelong.importance import fisher_diagonal, output_sensitivity
from lifelong.importance.estimate import IGNORE_INDEX
from lifelong.models.gpt import GPT, PRESETS, GPTConfig, gpt_config


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 12, **overrides}))


def sequences(n=6, length=10, seed=1, pad=True):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (n, length + 1), generator=g)
    x, y = tokens[:, :-1].to(torch.uint8), tokens[:, 1:].clone()
    if pad:
        y[0, -3:] = IGNORE_INDEX  # a padded tail counts in no loss and no importance
    return x, y


def test_presets_report_their_parameter_count():
    for name, config in PRESETS.items():
        if config.num_parameters < 20_000_000:
            assert sum(p.numel() for p in GPT(config).parameters()) == config.num_parameters, name
    assert gpt_config("gpt-1m", block_size=64).block_size == 64
    with pytest.raises(ValueError, match="unknown GPT size"):
        gpt_config("gpt-7b")
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="no option"):
        GPTConfig.from_dict({"layers": 3})
    assert GPTConfig.from_dict(GPTConfig().to_dict()) == GPTConfig()


def test_the_model_is_causal_and_checks_its_input():
    model = tiny().eval()
    x = torch.randint(0, 256, (2, 12))
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 256
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)  # a later token never reaches an earlier position
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        model(torch.zeros(13, dtype=torch.long))


def test_generation_is_greedy_at_temperature_zero_and_stops():
    model = tiny()
    prompt = torch.randint(0, 256, (3, 4))
    out = model.generate(prompt, 5, temperature=0)
    assert out.shape == (3, 9) and torch.equal(out[:, :4], prompt)
    assert torch.equal(out, model.generate(prompt, 5, temperature=0))
    expected = model(out[:, :-1])[:, -1].argmax(-1)
    assert torch.equal(out[:, -1], expected)


@pytest.mark.parametrize("true_fisher", [False, True])
def test_fisher_over_sequences_equals_the_per_sample_loop(true_fisher):
    """Next-token Fisher: per sample, the square of the gradient of the sequence's summed log-likelihood."""
    model = tiny()
    x, y = sequences()
    kwargs = {"true_fisher": true_fisher}
    auto = fisher_diagonal(model, [(x, y)], method="auto", generator=torch.Generator().manual_seed(3), **kwargs)
    loop = fisher_diagonal(model, [(x, y)], method="loop", generator=torch.Generator().manual_seed(3), **kwargs)
    assert set(auto) == {n for n, _ in model.named_parameters()}
    for name in loop:
        assert torch.allclose(auto[name], loop[name], rtol=1e-4, atol=1e-9), name
    assert all(v.abs().sum() > 0 for v in auto.values())  # the position embedding included


def test_fisher_sums_positions_before_squaring():
    """Not the mean of squared per-token gradients: a sequence is one sample."""
    model = tiny()
    x, y = sequences(n=1, pad=False)
    fisher = fisher_diagonal(model, [(x, y)])["lm_head.weight"]
    per_token = torch.zeros_like(fisher)
    for t in range(x.shape[1]):
        loss = torch.nn.functional.cross_entropy(model(x)[0, t: t + 1], y[0, t: t + 1], reduction="sum")
        per_token += torch.autograd.grad(loss, model.lm_head.weight)[0] ** 2
    whole = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x)[0], y[0], reduction="sum"),
                                model.lm_head.weight)[0] ** 2
    assert torch.allclose(fisher, whole, rtol=1e-4, atol=1e-10)
    assert not torch.allclose(fisher, per_token, rtol=1e-2)


def test_padding_counts_in_no_importance():
    model = tiny()
    x, y = sequences(n=1, pad=False)
    cut = y.clone()
    cut[0, 6:] = IGNORE_INDEX
    padded = fisher_diagonal(model, [(x, cut)])
    short = fisher_diagonal(model, [(x[:, :6], y[:, :6])])  # causal: the first 6 positions see the same inputs
    for name in ("lm_head.weight", "blocks.0.mlp.c_fc.weight", "wte.weight"):
        assert torch.allclose(padded[name], short[name], rtol=1e-4, atol=1e-10), name


def test_output_sensitivity_over_sequences_equals_the_loop():
    model = tiny()
    x, y = sequences()
    auto = output_sensitivity(model, [(x, y)], method="auto")
    loop = output_sensitivity(model, [(x, y)], method="loop")
    for name in loop:
        assert torch.allclose(auto[name], loop[name], rtol=1e-4, atol=1e-8), name


def test_fisher_kinds_over_sequences():
    """'fisher=' kinds from main: 'true' is the same as true_fisher=True, 'batched' squares the mean
    token loss of each mini-batch, and 'exact' (one pass per class) refuses sequences."""
    model = tiny()
    x, y = sequences()
    a = fisher_diagonal(model, [(x, y)], fisher="true", generator=torch.Generator().manual_seed(3))
    b = fisher_diagonal(model, [(x, y)], true_fisher=True, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[n], b[n]) for n in a)
    batched = fisher_diagonal(model, [(x, y)], fisher="batched", batch_size=3)
    expected = torch.zeros_like(model.lm_head.weight)
    for start in (0, 3):
        logits = model(x[start:start + 3])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y[start:start + 3].reshape(-1))
        expected += torch.autograd.grad(loss, model.lm_head.weight)[0] ** 2 / 2
    assert torch.allclose(batched["lm_head.weight"], expected, rtol=1e-4, atol=1e-12)
    with pytest.raises(ValueError, match="one label per sample"):
        fisher_diagonal(model, [(x, y)], fisher="exact")
