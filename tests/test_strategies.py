"""One suite for every registered strategy (and the composed one)."""

import pytest
import torch
import torch.nn.functional as F
from state_util import load_state, saved_state

from lifelong.data import StreamConfig
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.run import ModelConfig, RunConfig, run
from lifelong.strategies import (
    LANGUAGE_ONLY,
    LORA_ONLY,
    REGISTRY,
    STRATEGIES,
    Compose,
    build_strategy,
    strategy_options,
)

# those have their own suites (tests/test_lm.py, tests/test_olora.py): they need a GPT or LoRA adapters
ALL = [s for s in STRATEGIES if s not in (*LANGUAGE_ONLY, *LORA_ONLY)]
OPTIONS = {"replay": {"memory": 64}, "ewc+replay": {"memory": 64, "strength": 50.0},
           "ewc": {"strength": 50.0}, "online-ewc": {"strength": 50.0}}


def _learner(stream, name, seed=0):
    torch.manual_seed(seed)
    model = ContinualClassifier(MLP(64, (32,), 10), len(stream), 10)
    return Learner(model, build_strategy(name, {**OPTIONS.get(name, {}), "seed": seed}),
                   LearnerConfig(epochs=1, batch_size=32, seed=seed))


@pytest.mark.parametrize("name", ALL)
def test_zero_penalty_before_the_first_task(name, permuted_digits):
    learner = _learner(permuted_digits, name)
    assert float(learner.strategy.penalty(learner.model).detach()) == 0.0
    learner.fit(permuted_digits, 0)
    if name in ("ewc", "online-ewc", "si", "mas", "ewc+replay"):
        with torch.no_grad():  # away from the task's solution, the penalty bites
            for p in learner.model.parameters():
                p.add_(0.1)
        assert float(learner.strategy.penalty(learner.model).detach()) > 0.0


@pytest.mark.parametrize("name", ALL)
def test_resuming_from_state_dict_gives_the_same_penalty_and_the_same_step(name, permuted_digits):
    learner = _learner(permuted_digits, name)
    learner.fit(permuted_digits, 0)
    learner.fit(permuted_digits, 1)
    saved = saved_state(learner)
    resumed = _learner(permuted_digits, name, seed=5)  # different seed: everything must come from the state
    load_state(resumed, saved)
    for lr in (learner, resumed):
        lr.model.set_class_mask(permuted_digits.class_mask(2))
        lr.strategy.before_task(lr.model, 2)
    assert torch.equal(resumed.strategy.penalty(resumed.model), learner.strategy.penalty(learner.model))

    batch = next(iter(permuted_digits[2].train.get_batch(torch.arange(16)) for _ in range(1)))
    from lifelong.data import Batch

    b = Batch(batch[0], batch[1], torch.full((16,), 2))
    grads = []
    for lr in (learner, resumed):
        ext = lr.strategy.extend_batch(b)
        lr.model.zero_grad()
        F.cross_entropy(lr.model(ext.x, ext.task), ext.y).backward()
        lr.strategy.after_backward(lr.model)
        grads.append([p.grad.clone() for p in lr.model.parameters()])
    for g1, g2 in zip(*grads, strict=True):
        assert torch.equal(g1, g2)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result(name):
    cfg = RunConfig(StreamConfig("permuted-digits", tasks=2), name, OPTIONS.get(name, {}),
                    LearnerConfig(epochs=1, batch_size=64), ModelConfig("mlp", (16,)), seed=3)
    assert run(cfg).record["accuracy_matrix"] == run(cfg).record["accuracy_matrix"]


def test_registry_and_composition():
    assert set(REGISTRY) <= set(STRATEGIES) and "ewc+replay" in STRATEGIES
    s = build_strategy("si+replay", {"memory": 10, "strength": 2.0, "xi": 0.5})
    assert isinstance(s, Compose) and s.name == "si+replay"
    assert s.parts[0].config.xi == 0.5 and s.parts[1].config.memory == 10
    assert set(s.state_dict()) == {"si", "replay"}
    with pytest.raises(ValueError, match="takes no option"):
        build_strategy("naive", {"strength": 1.0})
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_options("ewc+dream")
    with pytest.raises(ValueError, match="appears twice"):
        build_strategy("ewc+ewc")
    with pytest.raises(ValueError, match="fisher"):
        build_strategy("ewc", {"fisher": "fake"})


def test_joint_trains_on_every_task_so_far(split_digits):
    parts = build_strategy("joint").train_data(split_digits, 2)
    assert [p.task_id for p in parts] == [0, 1, 2]


def test_replay_extends_batches_with_stored_samples_of_earlier_tasks(permuted_digits):
    learner = _learner(permuted_digits, "replay")
    learner.fit(permuted_digits, 0)
    memory = learner.strategy.memory
    assert len(memory) == 64 and set(memory.task[:64].tolist()) == {0}
    from lifelong.data import Batch

    x, y = permuted_digits[1].train.get_batch(torch.arange(8))
    out = learner.strategy.extend_batch(Batch(x, y, torch.ones(8, dtype=torch.long)))
    assert len(out.y) == 16 and out.task.tolist() == [1] * 8 + [0] * 8
