"""Continual reinforcement learning: PPO, the agents' importance definitions, functional
consolidation, and a 2-task few-thousand-step run (real gymnasium environments, tiny budgets)."""

import pytest
import torch
import torch.nn.functional as F

gym = pytest.importorskip("gymnasium")

from lifelong.agents.continual import RLRunConfig, build_rl_stream, run_rl  # noqa: E402
from lifelong.agents.dqn import DQNAgent, DQNConfig, boltzmann_temperature, tempered  # noqa: E402
from lifelong.agents.ppo import PPOAgent, PPOConfig, gae, masked_log_policy  # noqa: E402
from lifelong.data.control import observation_size  # noqa: E402
from lifelong.data.task import Batch  # noqa: E402
from lifelong.importance import fisher_diagonal  # noqa: E402
from lifelong.models.control import TaskInputMLP  # noqa: E402
from lifelong.models.heads import ContinualClassifier  # noqa: E402
from lifelong.strategies import build_strategy  # noqa: E402
from lifelong.strategies.base import Strategy  # noqa: E402
from lifelong.strategies.distill import Distill, DistillConfig, policy_kl  # noqa: E402
from lifelong.strategies.ewc import EWC, EWCConfig  # noqa: E402

SMALL = {"envs": 4, "rollout": 64, "epochs": 2, "minibatch": 128}


@pytest.fixture(scope="module")
def stream():
    return build_rl_stream(RLRunConfig("cartpole-rewired", tasks=2, eval_episodes=2))


def policy(stream, seed=0):
    torch.manual_seed(seed)
    net = TaskInputMLP(len(stream), observation_size(stream), (16, 16), stream.num_classes)
    model = ContinualClassifier(net, len(stream), stream.num_classes)
    model.set_class_mask(stream.class_mask(0))
    return model


def reference_policy_fisher(model, x, task):
    """E_s sum_a pi(a|s) (d log pi(a|s))^2, one backward pass per (state, action)."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i: i + 1], task[i: i + 1]), -1)[0]
        for a in torch.isfinite(logp).nonzero().flatten().tolist():
            grads = torch.autograd.grad(logp[a], list(params.values()), retain_graph=True, allow_unused=True)
            for n, g in zip(params, grads, strict=True):
                if g is not None:
                    total[n] += logp[a].exp().detach() * g ** 2
    return {n: t / len(x) for n, t in total.items()}


class Recording(EWC):
    """EWC that keeps the states its Fisher was estimated on."""

    def after_task(self, model, task_id, batches):
        self.seen = list(batches)
        super().after_task(model, task_id, self.seen)


def test_ppo_ewc_fisher_is_the_policy_fisher_at_visited_states(stream):
    model = policy(stream)
    strategy = Recording(EWCConfig(strength=1.0, fisher="exact"))
    agent = PPOAgent(model, strategy, len(stream), observation_size(stream), (16, 16),
                     PPOConfig(steps=512, importance_states=60, **SMALL))
    agent.fit(stream, 0)
    x = torch.cat([b.x for b in strategy.seen])
    task = torch.cat([b.task for b in strategy.seen])
    assert len(x) == 60 and set(task.tolist()) == {0}
    expected = reference_policy_fisher(model, x, task)
    got = dict(zip(strategy.quadratic.names, strategy.quadratic.precision, strict=True))
    assert set(got) == set(expected)
    for n in expected:
        assert torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-9), n
    assert expected["net.input.weight"][0].abs().sum() > 0 and expected["net.input.weight"][1].abs().sum() == 0


def test_exact_fisher_matches_a_loop_on_masked_logits_and_the_sampled_one_on_average(stream):
    model = policy(stream, seed=1)
    x, task = torch.randn(40, observation_size(stream)), torch.tensor([0, 1] * 20)
    model.set_class_mask(stream.class_mask(1))
    data = [Batch(x, torch.zeros(40, dtype=torch.long), task)]
    exact = fisher_diagonal(model, data, fisher="exact")
    looped = fisher_diagonal(model, data, fisher="exact", method="loop")
    reference = reference_policy_fisher(model, x, task)
    for n in reference:
        assert torch.allclose(exact[n], reference[n], rtol=1e-4, atol=1e-9), n
        assert torch.allclose(looped[n], reference[n], rtol=1e-4, atol=1e-9), n
    g = torch.Generator().manual_seed(0)
    sampled = [fisher_diagonal(model, data, true_fisher=True, generator=g)["net.trunk.1.weight"] for _ in range(100)]
    ratio = torch.stack(sampled).mean(0).sum() / reference["net.trunk.1.weight"].sum()
    assert 0.9 < float(ratio) < 1.1  # one sampled action per state: the exact Fisher on average
    with pytest.raises(ValueError, match="exact"):
        fisher_diagonal(model, data, fisher="exact", true_fisher=True)


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = gae(rewards, values, dones, torch.tensor([2.0]), gamma=0.9, lam=0.5)
    d2 = 1 + 0.9 * 2.0 - 0.3
    d1 = 1 - 0.4  # the episode ends after step 1: no bootstrap
    d0 = 1 + 0.9 * 0.4 - 0.5
    assert adv[:, 0].tolist() == pytest.approx([d0 + 0.45 * d1, d1, d2])
    assert torch.allclose(ret, adv + values)


def test_masked_policy_has_zero_mass_and_finite_entropy_off_the_task():
    logits = torch.tensor([[0.0, 0.0, float("-inf")]])
    logp, entropy = masked_log_policy(logits)
    assert logp.exp()[0, 2] == 0 and entropy.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


class Huge(Strategy):
    """Adds an enormous gradient after backward and records the gradient norm each step sees."""

    name = "huge"

    def __init__(self):
        self.norms = []

    def after_backward(self, model):
        for p in model.parameters():
            p.grad.add_(1e6)

    def after_step(self, model):
        self.norms.append(float(torch.stack([p.grad.norm() for p in model.parameters()]).norm()))


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_the_gradient_clip_covers_the_penalty(stream, agent):
    model, strategy = policy(stream), Huge()
    if agent == "ppo":
        learner = PPOAgent(model, strategy, len(stream), observation_size(stream), (16, 16),
                           PPOConfig(steps=256, max_grad_norm=0.5, **SMALL))
        limit = 0.5
    else:
        learner = DQNAgent(model, strategy, DQNConfig(steps=120, learning_starts=100, buffer=200))
        limit = 10.0
    learner.fit(stream, 0)
    assert strategy.norms and max(strategy.norms) <= limit * 1.001


def test_dqn_boltzmann_policy_does_not_change_with_reward_units():
    q = torch.tensor([[1.0, 3.0], [2.0, 2.5]])
    tau = boltzmann_temperature(q)
    assert tau == pytest.approx(float((q[:, 0] - q[:, 1]).abs().mean() / 2))
    net = torch.nn.Linear(2, 2)
    x = torch.randn(5, 2)
    with tempered(net, tau):
        small = torch.softmax(net(x), -1)
    with torch.no_grad():
        net.weight.mul_(100.0)
        net.bias.mul_(100.0)
    with tempered(net, tau * 100.0):
        large = torch.softmax(net(x), -1)
    assert torch.allclose(small, large, atol=1e-6)
    assert net(x).shape == (5, 2) and not torch.allclose(torch.softmax(net(x), -1), large)  # the hook is gone


def test_distillation_keeps_outputs_on_stored_states_and_counts_their_bytes(stream):
    model = policy(stream)
    x, task = torch.randn(50, observation_size(stream)), torch.zeros(50, dtype=torch.long)
    d = Distill(DistillConfig(per_task=30, replay_batch=16))
    d.after_task(model, 0, [Batch(x, torch.zeros(50, dtype=torch.long), task)])
    assert len(d) == 30
    assert d.stored_bytes() == 30 * (observation_size(stream) * 4 + 8 + stream.num_classes * 4)
    loss = d.extra_loss(model, Batch(x[:4], task[:4], task[:4]), model(x[:4], task[:4]))
    assert loss is not None and abs(float(loss.detach())) < 1e-6  # the same policy: nothing to distil
    old = torch.log_softmax(torch.tensor([[0.0, 1.0, float("-inf")]]), -1)
    new = torch.tensor([[1.0, 0.0, 5.0]])
    live = torch.tensor([[True, True, False]])
    expected = F.kl_div(torch.log_softmax(new[live].view(1, 2), -1), old[live].view(1, 2), log_target=True,
                        reduction="batchmean")
    assert float(policy_kl(new.masked_fill(~live, float("-inf")), old)) == pytest.approx(float(expected))


def test_a_two_task_few_thousand_step_run_with_every_method(stream):
    results = {}
    for name, options in (("naive", {}), ("ewc", {"fisher": "exact", "strength": 100.0}),
                          ("online-ewc", {"fisher": "exact"}), ("distill", {"per_task": 200}), ("multitask", {})):
        cfg = RLRunConfig("cartpole-rewired", tasks=2, strategy=name, strategy_options=options, steps=2048,
                          agent_options=SMALL, eval_episodes=2, curve_every=1024, curve_episodes=1)
        results[name] = r = run_rl(cfg, stream=stream)
        raw, rand, expert = r["return_matrix"], r["random_return"], r["expert_return"]
        assert r["accuracy_matrix"][-1][1] == pytest.approx((raw[-1][1] - rand[1]) / (expert[1] - rand[1]))
        assert r["curve"] and len(r["curve"][0]["returns"]) == 2
        assert r["timing"]["updates"] > 0
    assert len(results["naive"]["accuracy_matrix"]) == 2 and results["multitask"]["average_retention"] is None
    assert results["ewc"]["consolidation_bytes"] > 0 and results["ewc"]["stored_bytes"] == 0
    assert results["distill"]["stored_bytes"] > 0
    # the hook's time is recorded for every method; which is faster is the cost benchmark's question, not a
    # test's (a comparison of a few milliseconds flips on a loaded machine)
    assert all(r["timing"]["after_backward_seconds"] > 0 for r in results.values())
    # the same seed gives the same run
    again = run_rl(RLRunConfig("cartpole-rewired", tasks=2, steps=2048, agent_options=SMALL, eval_episodes=2,
                               curve_every=1024, curve_episodes=1), stream=stream)
    assert again["return_matrix"] == results["naive"]["return_matrix"]


def test_the_html_report_draws_every_task_return_over_the_agents_lifetime(stream, tmp_path):
    from lifelong.reporting.report import write_report

    runs = [run_rl(RLRunConfig("cartpole-rewired", tasks=2, strategy="ewc", strategy_options={"fisher": "exact"},
                               steps=1024, agent_options=SMALL, eval_episodes=1, curve_every=512, curve_episodes=1,
                               seed=seed), stream=stream) for seed in (0, 1)]
    old = {k: v for k, v in runs[1].items() if k != "scenario"}  # a result written before RL results had one
    page = write_report([runs[0], old], tmp_path).read_text()
    assert "returns over the agent" in page
    assert (tmp_path / "control-rl-cartpole-rewired-task-2-ewc-lifetime.png").exists()


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="unknown sequence"):
        RLRunConfig("pong")
    with pytest.raises(ValueError, match="policy_input"):
        RLRunConfig(policy_input="both")
    with pytest.raises(ValueError, match="steps"):
        PPOConfig(steps=0)
    with pytest.raises(ValueError, match="fisher"):
        build_strategy("ewc", {"fisher": "exactly"})


def test_lifelong_run_selects_the_ppo_agent():
    from lifelong.data import StreamConfig
    from lifelong.run import ModelConfig, RunConfig, run

    cfg = RunConfig(StreamConfig("control", "task", tasks=2, environments="cartpole-rewired", demos=0, eval_episodes=1),
                    "ewc", {"fisher": "exact"}, model=ModelConfig("mlp", (16, 16)), mode="rl", rl_steps=1024,
                    agent="ppo")
    r = run(cfg).record
    assert r["config"]["agent"] == "ppo" and r["per_task"][0]["steps"] == 1024 and r["consolidation_bytes"] > 0
    with pytest.raises(ValueError, match="agent"):
        run(RunConfig(cfg.stream, mode="rl", agent="a2c", rl_steps=10))


def test_dqn_importance_is_the_boltzmann_policy_fisher_at_its_temperature(stream):
    model = policy(stream)
    strategy = Recording(EWCConfig(strength=1.0, fisher="exact"))
    agent = DQNAgent(model, strategy, DQNConfig(steps=150, learning_starts=100, buffer=200, importance_states=50))
    stats = agent.fit(stream, 0)
    tau = stats["temperature"]
    x = torch.cat([b.x for b in strategy.seen])
    task = torch.cat([b.task for b in strategy.seen])
    with torch.no_grad():
        q = model(x, task)[:, :2]
    assert tau == pytest.approx(boltzmann_temperature(q))
    with tempered(model, tau):
        expected = reference_policy_fisher(model, x, task)
    got = dict(zip(strategy.quadratic.names, strategy.quadratic.precision, strict=True))
    for n in expected:
        assert torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-9), n



def test_ppo_kronecker_penalty_is_the_policy_fisher_over_allowed_actions(stream):
    """issue 18's Kronecker EWC on the PPO policy: after a task, the penalty on the output layer is
    1/2 vec(D)^T (A (x) G) vec(D), A over the visited states' inputs to that layer and G the
    expectation over the task's allowed actions of the log-policy gradient's outer product (masked
    actions have probability 0 and add nothing)."""
    from lifelong.importance.kronecker import layer_matrix
    from lifelong.models.mlp import MLP

    torch.manual_seed(0)
    obs = observation_size(stream)
    model = ContinualClassifier(MLP(obs, (16, 16), stream.num_classes), len(stream), stream.num_classes)
    strategy = build_strategy("online-kfac-ewc", {"strength": 1.0, "fisher": "exact"})
    seen = []
    original = strategy.after_task

    def recording(model, task_id, batches):
        seen.extend(batches)
        original(model, task_id, seen)

    strategy.after_task = recording
    agent = PPOAgent(model, strategy, len(stream), obs, (16, 16), PPOConfig(steps=512, importance_states=40, **SMALL))
    agent.fit(stream, 0)
    x, task = torch.cat([b.x for b in seen]), torch.cat([b.task for b in seen])
    assert len(x) == 40 and set(task.tolist()) == {0}
    out = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    inputs = []
    handle = out.register_forward_hook(lambda mod, i, o: inputs.append(i[0].detach()))
    with torch.no_grad():
        p = torch.softmax(model(x, task), -1)
    handle.remove()
    allowed = p[0] > 0
    assert 0 < int(allowed.sum()) < stream.num_classes  # the other task's actions are masked out
    g_ref = torch.zeros(stream.num_classes, stream.num_classes)
    for n in range(len(x)):
        for a in allowed.nonzero().flatten().tolist():
            g = p[n] - F.one_hot(torch.tensor(a), stream.num_classes)
            g_ref += p[n, a] * torch.outer(g, g)
    a_tilde = torch.cat([inputs[0], torch.ones(len(x), 1)], 1)
    fisher = torch.kron(a_tilde.T @ a_tilde / len(x), g_ref / len(x))
    anchor = layer_matrix(out.weight, out.bias).detach().clone()
    with torch.no_grad():
        out.weight.add_(0.1 * torch.randn_like(out.weight))
        out.bias.add_(0.1 * torch.randn_like(out.bias))
    v = (layer_matrix(out.weight, out.bias).detach() - anchor).T.flatten()
    expected = 0.5 * v @ fisher @ v
    assert float(strategy.penalty(model).detach()) == pytest.approx(float(expected), rel=1e-4)
