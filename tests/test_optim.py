"""CompiledAdam: torch's Adam to rounding, with a consolidation penalty's gradient folded into its step."""

import copy
import gc

import pytest
import torch
from lm_util import needs_wordnet, tiny_run

from lifelong.learner import Learner, LearnerConfig
from lifelong.lm.run import LMRunConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.optim import CompiledAdam
from lifelong.strategies import build_strategy
from lifelong.strategies.quadratic import QuadraticPenalty


def _penalty(net: torch.nn.Module, storage: str = "fp32") -> QuadraticPenalty:
    penalty = QuadraticPenalty(strength=0.7, storage=storage)
    penalty.add({n: torch.rand_like(p) for n, p in net.named_parameters()},
                {n: torch.randn_like(p) for n, p in net.named_parameters()})
    return penalty


@pytest.mark.parametrize("compile", [False, True])
def test_follows_torch_adam_with_the_library_gradient_step_after_step(compile) -> None:
    nets = [torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0].weight.detach().clone()
    penalty = _penalty(nets[0])
    reference = torch.optim.Adam(nets[0].parameters(), lr=0.05)
    folded = CompiledAdam(nets[1].parameters(), lr=0.05, compile=compile)
    folded.fold(penalty, nets[1])
    x = torch.randn(8, 5)
    for _ in range(4):  # the bias corrections change every step
        for net, opt in zip(nets, (reference, folded), strict=True):
            opt.zero_grad()
            net(x).square().mean().backward()
            if opt is reference:
                penalty.add_gradient_(net)
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert (nets[1].weight.detach() - start).abs().min() > 0.01  # four steps of 0.05 moved every weight


def test_takes_torch_adams_state_and_goes_on_alike() -> None:
    nets = [torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)]
    x = torch.randn(6, 4)
    reference = torch.optim.Adam(nets[0].parameters(), lr=0.02)
    for _ in range(3):
        reference.zero_grad()
        nets[0](x).square().mean().backward()
        reference.step()
    nets[1].load_state_dict(nets[0].state_dict())
    compiled = CompiledAdam(nets[1].parameters(), lr=0.02, compile=False)
    compiled.load_state_dict(copy.deepcopy(reference.state_dict()))  # as from a checkpoint: no shared tensors
    for net, opt in zip(nets, (reference, compiled), strict=True):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert float(compiled.state[nets[1].weight]["step"]) == 4


def test_refuses_a_penalty_it_does_not_fold() -> None:
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="fp32"):
        CompiledAdam(net.parameters(), lr=0.1).fold(_penalty(net, storage="bf16"), net)
    with pytest.raises(ValueError, match="lr"):
        CompiledAdam(net.parameters(), lr=0.0)


def _trained_ewc(stream, storage: str = "fp32"):
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(64, (32,), 10), len(stream), 10)
    strategy = build_strategy("ewc", {"strength": 50.0, "storage": storage})
    Learner(model, strategy, LearnerConfig(batch_size=32)).fit(stream, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)  # away from the anchor: the penalty's gradient is not zero
    return model, strategy


def _penalty_gradient_added(strategy, model) -> bool:
    model.zero_grad(set_to_none=True)
    strategy.after_backward(model)
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_folded_penalty_leaves_after_backward_until_the_optimizer_goes(permuted_digits) -> None:
    model, ewc = _trained_ewc(permuted_digits)
    assert _penalty_gradient_added(ewc, model)
    compiled = CompiledAdam(model.parameters(), compile=False)
    assert ewc.fold_into(compiled, model)
    assert not _penalty_gradient_added(ewc, model)  # the optimizer adds it inside its step
    assert not ewc.fold_into(torch.optim.Adam(model.parameters()), model)  # another optimizer takes it back
    assert _penalty_gradient_added(ewc, model)
    assert ewc.fold_into(compiled, model)
    del compiled
    gc.collect()
    assert _penalty_gradient_added(ewc, model)  # the optimizer it was folded into is gone

    model, ewc_bf16 = _trained_ewc(permuted_digits, storage="bf16")
    assert not ewc_bf16.fold_into(CompiledAdam(model.parameters(), compile=False), model)
    assert _penalty_gradient_added(ewc_bf16, model)  # not foldable: added after backward as before


def test_learner_with_the_compiled_adam_trains_ewc_as_torch_adam_does(permuted_digits) -> None:
    """Two tasks of EWC, torch's Adam against the compiled one with the penalty folded in: the same
    weights to rounding (the penalty added twice, or not at all, would move them apart ten times more)."""
    weights = []
    for optimizer in ("adam", "adam-compiled"):
        torch.manual_seed(0)
        model = ContinualClassifier(MLP(64, (32,), 10), len(permuted_digits), 10)
        learner = Learner(model, build_strategy("ewc", {"strength": 500.0}),
                          LearnerConfig(batch_size=64, optimizer=optimizer))
        for task in range(2):
            learner.fit(permuted_digits, task)
        if optimizer == "adam-compiled":
            assert isinstance(learner.optimizer, CompiledAdam) and learner.optimizer._penalties
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    apart = (weights[0] - weights[1]).abs()
    # measured: mean 2.3e-5, max 6.9e-4 (rounding: P theta and P m nearly cancel at strength 500, and
    # the two ways subtract them in another order); the penalty doubled moves them mean 9.6e-4, max 9.4e-3
    assert apart.mean() < 1e-4 and apart.max() < 3e-3, (apart.mean(), apart.max())


@needs_wordnet
def test_a_language_model_run_folds_the_penalty_and_scores_as_with_torch_adam():
    options = {"strength": 10.0, "samples": 8, "tokens": 2 * 33 * 3}
    runs = [tiny_run("ewc+token-replay", options, optimizer=o) for o in ("adam", "adam-compiled")]
    assert runs[1]["config"]["optimizer"] == "adam-compiled"
    for a, b in zip(runs[0]["scores"], runs[1]["scores"], strict=True):
        for x, y in zip(a, b, strict=True):
            assert x["loss"] == pytest.approx(y["loss"], abs=1e-3)
            assert x["accuracy"] == pytest.approx(y["accuracy"], abs=0.02)
    with pytest.raises(ValueError, match="optimizer"):
        LMRunConfig(optimizer="sgd")
