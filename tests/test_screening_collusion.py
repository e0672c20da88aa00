"""Screens that do not count keys, on small real data (scikit-learn's 8x8 digits): a flipped class sent
from as many keys as the honest ones leaves a one-way copy inside the label it claims (label
collisions), learned classes are checked against the guard sets and the model (guard agreement), and
the influence check at the gate holds a cluster whose removal costs the new task nothing."""

from __future__ import annotations

from dataclasses import replace

import torch
from service_util import digits_parts, model_template

from lifelong.checkpoint import load_model
from lifelong.data import ArrayDataset, split
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.screening import ScreenConfig, find_collisions, guard_agreement, label_collisions, represent, unit_rows
from lifelong.service.influence import train_with_influence
from lifelong.service.worker import UpdateSettings
from lifelong.strategies import build_strategy

NAMES = [str(d) for d in range(10)]


def _take(data: ArrayDataset, digit: int, start: int, count: int) -> torch.Tensor:
    rows = (data.y == digit).nonzero().squeeze(1)
    return data.x[rows[start: start + count]]


def _batch(train: ArrayDataset, flipped: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Honest examples of digits 5-9 (60 each) and `flipped` other images of a 6 labelled "7": the
    flipped sixes outnumber the honest sevens."""
    xs, labels = [], []
    for d in (5, 6, 7, 8, 9):
        xs.append(_take(train, d, 0, 60))
        labels += [str(d)] * 60
    xs.append(_take(train, 6, 60, flipped))
    labels += ["7"] * flipped
    poison = torch.tensor([False] * 300 + [True] * flipped)
    return torch.cat(xs), labels, poison


def test_a_flipped_class_is_held_whoever_sends_it_and_its_honest_twin_is_not(digits):
    x, labels, poison = _batch(digits[0], 65)
    # the posterior threshold at 0.5: the tuned default (0.7, chosen on the benchmark's validation
    # scenarios of 1,500-2,000 examples) holds 40 of these 65 and still no honest example
    config = replace(ScreenConfig(), collision_posterior=0.5)
    holds = label_collisions(x, labels, config=config, space="input")
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[[h.index for h in holds]] = True
    # measured on this selection: 63 of the 65 flipped sixes held, no honest example (the honest sixes,
    # which the flipped ones copy, included); the bounds leave room for other float kernels
    assert int((held & poison).sum()) >= 0.9 * int(poison.sum())
    assert int((held & ~poison).sum()) <= 0.03 * int((~poison).sum())
    assert not held[60:120].any()  # the honest sixes: the copy is one-way
    assert all(h.screen == "label-collision" and "'6' examples inside label '7'" in h.reason for h in holds)
    # the same honest examples without the flip: (nearly) nothing held
    clean = label_collisions(x[:300], labels[:300], config=config, space="input")
    assert len(clean) <= 0.02 * 300


def test_near_duplicates_count_once():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(60, 16, generator=g) + 2, torch.randn(60, 16, generator=g) - 2
    copies = torch.randn(30, 16, generator=g) + 2  # class a's inputs labelled b
    distinct = torch.cat([a, b, copies])
    repeated = torch.cat([a, b, copies.repeat(5, 1)])  # the same 30 inputs, five times each
    labels = ["a"] * 60 + ["b"] * 60
    config = replace(ScreenConfig(), collision_posterior=0.5)
    once = find_collisions(unit_rows(distinct), labels + ["b"] * 30, config=config)
    five = find_collisions(unit_rows(repeated), labels + ["b"] * 150, config=config)
    assert [(c.label, c.copies) for c in once] == [("b", "a")] == [(c.label, c.copies) for c in five][:1]
    assert abs(once[0].share - five[0].share) < 0.1  # volume does not buy a bigger share
    held = {i for c in five for i in c.rows}
    assert len(held & set(range(120, 270))) >= 0.9 * 150 and held <= set(range(120, 270))
    assert all({120 + k + 30 * r for r in range(5)} <= held for k in range(30) if 120 + k in held)  # whole groups


def test_guard_agreement_holds_flipped_learned_digits_and_never_judges_new_labels(digits):
    train, test = digits
    torch.manual_seed(0)
    stream = split(train, test, num_tasks=2, scenario="class")
    model = ContinualClassifier(MLP(64, (64,), 10), 2, 10)
    learner = Learner(model, build_strategy("ewc+replay", {"memory": 200}), LearnerConfig(epochs=30, batch_size=32))
    learner.fit(stream, 0)
    learned = [0, 1, 2, 3, 4]
    ref_rows = torch.isin(train.y, torch.tensor(learned)).nonzero().squeeze(1)[:250]
    ref_x, ref_labels = train.x[ref_rows], [NAMES[int(c)] for c in train.y[ref_rows]]
    honest_rows = torch.isin(test.y, torch.tensor(learned)).nonzero().squeeze(1)
    flips = _take(test, 1, 0, 40)  # ones labelled "2", as many keys as you like: keys play no part
    new = _take(test, 8, 0, 40)  # a new label the model never learned
    x = torch.cat([test.x[honest_rows], flips, new])
    labels = [NAMES[int(c)] for c in test.y[honest_rows]] + ["2"] * 40 + ["9"] * 40
    n = len(honest_rows)
    features, probs = represent(model, x, task=0)
    ref_features, _ = represent(model, ref_x, task=0)
    holds = guard_agreement(features, labels, (ref_features, ref_labels), probs[:, learned],
                            [NAMES[c] for c in learned], ScreenConfig())
    held = {h.index for h in holds}
    # measured with model seeds 0-2: 33, 30, 31 of the 40 flips held and at most 1 of the 281 honest
    # examples; the bounds leave room for other float kernels
    assert len(held & set(range(n, n + 40))) >= 0.6 * 40
    assert len(held & set(range(n))) <= 0.02 * n
    assert not held & set(range(n + 40, n + 80))  # the new label is not judged by a model that never saw it
    assert all("nearest guard examples say '1'" in h.reason for h in holds if n <= h.index < n + 40)


def test_influence_check_holds_a_flipped_cluster_that_costs_the_new_task_nothing():
    parts = digits_parts()
    more = parts["more"]
    honest = torch.isin(more.y, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])).nonzero().squeeze(1)[:320]
    threes = (more.y == 3).nonzero().squeeze(1)
    x = torch.cat([more.x[honest], more.x[threes[-60:]]])  # 60 threes labelled "5", unscreened
    labels = [str(int(c)) for c in more.y[honest]] + ["5"] * 60
    ids = list(range(len(labels)))
    settings = UpdateSettings(epochs=5)
    config = ScreenConfig()
    checked = train_with_influence(load_model(model_template()), x, labels, ids, settings, config, "feedback", 0)
    report = checked.report
    assert report["clusters"] and report["clusters"][0]["label"] == "5" and report["clusters"][0]["copies"] == "3"
    assert report["decision"].startswith("held"), report
    assert report["new_without"] >= report["new_with"]
    flipped = set(range(320, 380))
    assert len(set(checked.held) & flipped) >= 0.9 * 60 and len(set(checked.held) - flipped) <= 5
    trained = set(checked.candidate.report["feedback"]["train_ids"])
    assert not trained & set(checked.held)
    # clean feedback: no cluster, no second training, nothing held
    clean = train_with_influence(load_model(model_template()), x[:320], labels[:320], ids[:320], settings,
                                 config, "feedback", 0)
    assert clean.report["clusters"] == [] and clean.held == {}
    # the check is off with the config flag's owner: the worker only calls it when `influence` is on
    assert replace(config, influence=False).influence is False


def test_bad_options_and_inputs_get_clear_errors():
    import pytest

    with pytest.raises(ValueError, match="collision_posterior"):
        ScreenConfig(collision_posterior=1.5)
    with pytest.raises(ValueError, match="collision_neighbours"):
        ScreenConfig(collision_neighbours=0)
    with pytest.raises(ValueError, match="unknown collision space"):
        ScreenConfig.from_dict({"collision_spaces": ["pixels"]})
    with pytest.raises(ValueError, match="feature rows"):
        label_collisions(torch.randn(5, 3), ["a"] * 6)
    with pytest.raises(ValueError, match="trust flags"):
        find_collisions(unit_rows(torch.randn(5, 3)), ["a"] * 5, [True])
    assert ScreenConfig.from_dict(ScreenConfig().to_dict()) == ScreenConfig()
