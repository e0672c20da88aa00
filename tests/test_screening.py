"""Screening feedback before an update: each screen on a small real case (scikit-learn's digits and a
small MLP trained on digits 0-4), per-source limits, held examples never trained on, and the
promotion gate's rule rejecting a forgetting attack."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lifelong.data import ArrayDataset, Task, TaskStream, split
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.screening import (
    ScreenConfig,
    SourceRateLimiter,
    backdoor_outliers,
    cap_source_share,
    label_noise,
    represent,
    screen,
    screen_model,
    training_data,
)
from lifelong.strategies import build_strategy

NAMES = [str(d) for d in range(10)]
LEARNED = [0, 1, 2, 3, 4]

# the memory the screens' thresholds were set with (the library default is class-balanced since)
RESERVOIR_200 = {"memory": 200, "selection": "reservoir"}


@pytest.fixture(scope="module")
def world(digits):
    """A model that learned digits 0-4 (class-incremental, EWC + replay), its stream, and the data."""
    torch.manual_seed(0)
    stream = split(*digits, num_tasks=2, scenario="class")
    model = ContinualClassifier(MLP(64, (64,), 10), 2, 10)
    learner = Learner(model, build_strategy("ewc+replay", RESERVOIR_200), LearnerConfig(epochs=30, batch_size=32))
    learner.fit(stream, 0)
    assert learner.evaluate(stream)[0] > 0.95
    return {"model": model, "stream": stream, "train": digits[0], "test": digits[1]}


def _pick(data: ArrayDataset, classes: list[int], n: int | None = None,
          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.isin(data.y, torch.tensor(classes)).nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))][:n]
    return data.x[idx], data.y[idx]


def _reference(world) -> tuple[torch.Tensor, list[str]]:
    x, y = _pick(world["train"], LEARNED, 200, seed=1)
    return x, [NAMES[int(c)] for c in y]


def _honest(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [f"user-{int(i)}" for i in torch.randint(10, (n,), generator=g)]


def _trigger(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[..., 5:8, 5:8] = 1.0  # a bright 3x3 patch in the bottom right corner
    return x


def _screen(world, x, labels, sources, config):
    return screen_model(world["model"], x, labels, sources, NAMES, LEARNED, _reference(world), config, task=0)


def test_label_noise_holds_flipped_labels_and_passes_clean(world):
    x, y = _pick(world["test"], LEARNED)  # examples the model never trained on
    labels = [NAMES[int(c)] for c in y]
    g = torch.Generator().manual_seed(0)
    flipped = torch.randperm(len(labels), generator=g)[: len(labels) // 10].tolist()
    for i in flipped:
        labels[i] = NAMES[(int(y[i]) + 1 + int(torch.randint(4, (1,), generator=g))) % 5]
    only = ScreenConfig(source_limits=False, source_outliers=False, backdoor=False, label_collisions=False,
                        guard_agreement=False)
    result = _screen(world, x, labels, _honest(len(labels)), only)
    held = set(result.held)
    assert len(held & set(flipped)) >= 0.8 * len(flipped)
    assert len(held - set(flipped)) <= 0.05 * (len(labels) - len(flipped))
    assert all(h.screen == "label-noise" and "labelled" in h.reason for h in result.holds)
    # clean feedback alone: nothing much held
    clean = _screen(world, x, [NAMES[int(c)] for c in y], _honest(len(labels)), only)
    assert len(clean.held) <= 0.05 * len(labels)


def test_new_labels_are_not_held_for_being_new(world):
    x, y = _pick(world["test"], [5, 6, 7, 8, 9])  # digits the model never learned
    labels = [NAMES[int(c)] for c in y]
    result = _screen(world, x, labels, _honest(len(labels)), ScreenConfig())
    assert len(result.held) <= 0.05 * len(labels)
    # the model's own vote is left out for labels it never learned: the features alone decide
    features, probs = represent(world["model"], x, task=0)
    holds = label_noise(features, labels, _honest(len(labels)), probs[:, LEARNED], [NAMES[c] for c in LEARNED],
                        config=ScreenConfig())
    assert len(holds) <= 0.05 * len(labels)


def test_backdoor_screen_holds_a_planted_trigger_and_passes_clean(world):
    cx, cy = _pick(world["test"], [5, 6, 7, 8, 9], seed=2)
    px, _ = _pick(world["test"], [0, 1, 2, 3, 4, 5, 6, 8, 9], 40, seed=3)
    x = torch.cat([cx, _trigger(px)])
    labels = [NAMES[int(c)] for c in cy] + ["7"] * len(px)
    sources = _honest(len(cy)) + [f"attacker-{i % 2}" for i in range(len(px))]
    poison = set(range(len(cy), len(labels)))
    features, _ = represent(world["model"], x, task=0)
    holds = backdoor_outliers(features, labels, sources, ScreenConfig())
    held = {h.index for h in holds}
    # alone it holds the tight cluster the trigger makes (most of the poison; triggered images close
    # to real 7s stay with them), and the other layers take the rest
    assert len(held & poison) >= 0.7 * len(poison)
    assert len(held - poison) <= 0.05 * len(cy)
    assert all(h.screen == "backdoor" for h in holds)
    # the same label without the planted examples: nothing held
    clean = backdoor_outliers(features[: len(cy)], labels[: len(cy)], sources[: len(cy)], ScreenConfig())
    assert len(clean) <= 0.05 * len(cy)
    # all layers together hold the trigger too, and still pass the clean examples
    result = _screen(world, x, labels, sources, ScreenConfig())
    assert len(set(result.held) & poison) >= 0.9 * len(poison)
    assert len(set(result.held) - poison) <= 0.05 * len(cy)


def test_source_outliers_hold_a_key_that_sends_mislabelled_examples(world):
    cx, cy = _pick(world["test"], [5, 6, 7, 8, 9], seed=4)
    px, _ = _pick(world["test"], [5], 30, seed=5)  # class A = 5 labelled B = 6 by one key
    x = torch.cat([cx, px])
    labels = [NAMES[int(c)] for c in cy] + ["6"] * len(px)
    sources = _honest(len(cy)) + ["attacker"] * len(px)
    result = _screen(world, x, labels, sources, replace(ScreenConfig(), label_noise=False, backdoor=False,
                                                        source_limits=False, label_collisions=False,
                                                        guard_agreement=False))
    held = set(result.held)
    poison = set(range(len(cy), len(labels)))
    assert held >= poison
    assert all("'attacker'" in h.reason for h in result.holds if h.index in poison)
    # honest keys' groups are small (about 10 examples a label), so a few hard examples can lift one
    # past the threshold (it happened to one group of '7', z 5.0 against 5.0, after a scikit-learn
    # update): the bound is the benchmark's, at most 5 % of clean feedback held
    assert len(held - poison) <= 0.05 * len(cy)


def test_source_share_cap_holds_a_floods_excess():
    sources = [f"user-{i % 20}" for i in range(200)] + ["flooder"] * 300
    holds = cap_source_share(sources, max_share=0.1, min_sources=5)
    held = {h.index for h in holds}
    assert all(sources[i] == "flooder" for i in held)
    kept = [s for i, s in enumerate(sources) if i not in held]
    share = kept.count("flooder") / len(kept)
    assert 0.09 <= share <= 0.1  # exactly at the cap: the earliest of its examples are kept
    first = list(range(200, 200 + kept.count("flooder")))
    assert [i for i, s in enumerate(sources) if s == "flooder" and i not in held] == first
    for hold in holds:
        assert hold.screen == "source-share" and "'flooder'" in hold.reason
    # no source above the cap: nothing held; too few sources to cap; an exempt source is not capped
    assert cap_source_share([f"user-{i % 10}" for i in range(200)], 0.1, 5) == []
    # with 10 sources, the cap is twice an even share (20 %), not 10 %
    uneven = [f"user-{i % 9}" for i in range(180)] + ["user-9"] * 40
    assert cap_source_share(uneven, 0.1, 5) == []
    assert {sources[h.index] for h in cap_source_share(sources, 0.1, 5)} == {"flooder"}
    assert cap_source_share(["a"] * 50 + ["b"] * 5, 0.1, min_sources=5) == []
    assert cap_source_share(sources, 0.1, 5, exempt=["flooder"]) == []


def test_rate_limiter_refuses_beyond_the_rate_and_recovers():
    limiter = SourceRateLimiter(per_minute=120, burst=10)
    assert limiter.take("k", 10, now=0.0) == (True, 0.0)
    allowed, wait = limiter.take("k", 1, now=0.0)
    assert not allowed and wait == pytest.approx(0.5)
    assert limiter.take("other", 5, now=0.0)[0]  # per source
    assert limiter.take("k", 1, now=0.5)[0]
    assert limiter.take("k", 11, now=100.0) == (False, float("inf"))  # larger than a burst: never


def test_held_examples_are_never_trained_on(world):
    cx, cy = _pick(world["test"], [5, 6, 7, 8, 9], seed=6)
    px, _ = _pick(world["test"], [0, 1, 2, 3, 4], 40, seed=7)
    x = torch.cat([cx, _trigger(px)])
    labels = [NAMES[int(c)] for c in cy] + ["7"] * len(px)
    sources = _honest(len(cy)) + ["attacker-0", "attacker-1"] * (len(px) // 2)
    ids = [1000 + i for i in range(len(labels))]
    result = screen_model(world["model"], x, labels, sources, NAMES, LEARNED, _reference(world), ScreenConfig(),
                          ids=ids, task=0)
    assert result.held and result.held_ids == [ids[i] for i in result.held]
    approved = result.held_ids[:1]  # a maintainer approved one held example
    tx, tlabels, tids = training_data(x, labels, ids, result, approved=approved)
    assert set(tids) == set(result.kept_ids) | set(approved)
    assert not set(tids) & (set(result.held_ids) - set(approved))
    with pytest.raises(ValueError, match="another batch"):
        training_data(x, labels, ids[::-1], result)
    # train on what training_data returned and record every input that reaches a training step
    model = world["model"]
    stream = world["stream"]
    new = Task(1, ArrayDataset(tx, torch.tensor([int(v) for v in tlabels])), stream[1].test, (5, 6, 7, 8, 9), "new")
    strategy = build_strategy("ewc+replay", {**RESERVOIR_200, "memory": 50})
    learner = Learner(ContinualClassifier(MLP(64, (64,), 10), 2, 10), strategy,
                      LearnerConfig(epochs=2, batch_size=16))
    learner.model.load_state_dict(model.state_dict())
    seen: list[torch.Tensor] = []
    extend = learner.strategy.extend_batch

    def spy(batch):
        out = extend(batch)
        seen.append(out.x.flatten(1))
        return out

    learner.strategy.extend_batch = spy  # type: ignore[method-assign]
    learner.fit(TaskStream([stream[0], new], 10, "class"), 1)
    trained = torch.cat(seen)
    forbidden = [x[i].flatten() for i in range(len(ids)) if ids[i] in set(result.held_ids) - set(approved)]
    for row in forbidden:
        assert not (trained == row).all(1).any()


def test_gate_rejects_a_forgetting_attack(world):
    from lifelong.service.gate import decide

    stream = world["stream"]
    guard_x, guard_y = _pick(world["test"], LEARNED, seed=8)
    guard = Task(0, stream[0].train, ArrayDataset(guard_x, guard_y), tuple(LEARNED), "digits 0-4")
    px, py = _pick(world["train"], LEARNED, 300, seed=9)  # old digits with wrong labels
    wrong = (py + 1 + torch.randint(4, (len(py),), generator=torch.Generator().manual_seed(0))) % 5
    attack = Task(1, ArrayDataset(px, wrong), ArrayDataset(px[:50], wrong[:50]), tuple(LEARNED), "feedback")
    view = TaskStream([guard, attack], 10, "class")
    model = ContinualClassifier(MLP(64, (64,), 10), 2, 10)
    model.load_state_dict(world["model"].state_dict())
    current = Learner(world["model"], build_strategy("naive"), LearnerConfig()).evaluate(view, position=0)
    learner = Learner(model, build_strategy("ewc+replay", RESERVOIR_200), LearnerConfig(epochs=10, batch_size=32))
    learner.fit(view, 1)
    candidate = learner.evaluate(view)
    report = decide(current, candidate, ["digits 0-4", "feedback (held out)"], [len(guard_y), 50], 0.01)
    assert not report["passed"]
    assert report["failed"][0].startswith('guard "digits 0-4"')
    # in a stream with honest feedback (new digits), the screens hold nearly all of that attack
    cx, cy = _pick(world["test"], [5, 6, 7, 8, 9], seed=10)
    x = torch.cat([cx, px])
    labels = [NAMES[int(c)] for c in cy] + [NAMES[int(c)] for c in wrong]
    sources = _honest(len(cy)) + [f"attacker-{i % 3}" for i in range(len(px))]
    held = set(_screen(world, x, labels, sources, ScreenConfig()).held)
    assert len(held & set(range(len(cy), len(labels)))) >= 0.9 * len(px)
    assert len(held - set(range(len(cy), len(labels)))) <= 0.05 * len(cy)


def test_screen_checks_its_inputs_and_config_round_trips():
    features = torch.randn(10, 4)
    with pytest.raises(ValueError, match="feature rows"):
        screen(features[:5], ["a"] * 10)
    with pytest.raises(ValueError, match="probs"):
        screen(features, ["a"] * 10, probs=torch.rand(10, 3), known=["a", "b"])
    cfg = ScreenConfig(max_source_share=0.2, exempt_sources=("ops",))
    assert ScreenConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="ScreenConfig has no option"):
        ScreenConfig.from_dict({"nope": 1})
