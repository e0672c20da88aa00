"""Class-incremental peers: numerics of each method, and an end-to-end run on digits."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data import Batch, StreamConfig
from lifelong.learner import LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.run import ModelConfig, RunConfig, run
from lifelong.strategies import build_strategy
from lifelong.strategies.agem import project
from lifelong.strategies.bias import BiC, BiCConfig, correct, fit_correction
from lifelong.strategies.der import DER, DERPPConfig
from lifelong.strategies.icarl import ICaRL, ICaRLConfig
from lifelong.strategies.lwf import LwF, LwFConfig, distillation
from lifelong.strategies.memory import ReplayMemory, herding_order


def test_agem_projection_never_conflicts_with_the_reference_and_leaves_agreeing_gradients_alone():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
        r = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
        before = [t.clone() for t in g]
        conflicted = project(g, r)
        dot_before = sum((a * b).sum() for a, b in zip(before, r, strict=True))
        dot_after = sum((a * b).sum() for a, b in zip(g, r, strict=True))
        assert dot_after >= -1e-5
        assert conflicted == bool(dot_before < 0)
        if not conflicted:
            assert all(torch.equal(a, b) for a, b in zip(g, before, strict=True))


def test_herding_picks_the_samples_whose_running_mean_is_closest_to_the_class_mean():
    # Unit vectors at 0, 40, -90 and 150 degrees; their mean m is (0.225, 0.036).
    # 1st: the vector closest to m: 0 degrees.
    # 2nd: |(f0 + fi) / 2 - m|^2 is 0.52 (40), 0.36 (-90), 0.07 (150): the 150-degree vector, far from
    #      m itself, because it pulls the running mean back (a nearest-sample rule would take 40).
    # 3rd: |(f0 + f150 + fi) / 3 - m|^2 is 0.13 (40), 0.07 (-90): the -90-degree vector.
    angles = torch.tensor([0.0, 40.0, -90.0, 150.0]) * torch.pi / 180
    features = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    assert herding_order(features, 3).tolist() == [0, 3, 2]


def test_herding_memory_keeps_an_equal_share_per_class_within_budget():
    mem = ReplayMemory(12, "herding")
    for task, classes in enumerate([(0, 1), (2, 3), (4, 5)]):
        y = torch.tensor([c for c in classes for _ in range(20)])
        x = torch.randn(len(y), 3)
        mem.herd(Batch(x, y, torch.full_like(y, task)), x)
        counts = mem.class_counts()
        assert len(mem) <= 12 and len(set(counts.values())) == 1, counts
    assert sorted(mem.class_counts()) == [0, 1, 2, 3, 4, 5]


def test_weight_aligning_equalises_the_mean_norms_of_new_and_old_class_weights():
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(4, (8,), 6), 3, 6)
    wa = build_strategy("wa")
    with torch.no_grad():
        model.head.weight[4:] *= 5.0  # the newest classes' weights grew, as they do without correction
    y_first, y_second, y_third = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    wa.after_task(model, 0, [(torch.zeros(2, 4), y_first)])
    wa.after_task(model, 1, [(torch.zeros(2, 4), y_second)])
    wa.after_task(model, 2, [(torch.zeros(2, 4), y_third)])
    norms = model.head.weight.norm(dim=1)
    assert torch.isclose(norms[4:].mean(), norms[:4].mean(), rtol=1e-5)


def test_bic_fits_a_correction_that_removes_a_planted_bias():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(25)
    logits = torch.randn(100, 4, generator=gen) + 3 * F.one_hot(labels, 4)
    new = torch.tensor([False, False, True, True])
    biased = torch.where(new, 2.0 * logits + 4.0, logits)  # new classes inflated
    alpha, beta = fit_correction(biased, labels, new, steps=500, lr=0.05)
    fixed = correct(biased, new, alpha, beta)
    assert (fixed.argmax(1) == labels).float().mean() > (biased.argmax(1) == labels).float().mean() + 0.3


def test_der_plus_plus_loss_equals_a_hand_computed_value():
    torch.manual_seed(0)
    model = ContinualClassifier(nn.Linear(2, 3), 1, 3)
    der = DER(DERPPConfig(memory=2, alpha=0.5, beta=2.0, replay_batch=2))
    x_old, y_old = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 2])
    stored = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    der.memory.add(Batch(x_old, y_old, torch.zeros(2, dtype=torch.long)), {"logits": stored})
    batch = Batch(torch.tensor([[2.0, 2.0]]), torch.tensor([1]), torch.zeros(1, dtype=torch.long))
    loss = der.extra_loss(model, batch, model(batch.x, batch.task))
    out = model(x_old, torch.zeros(2, dtype=torch.long))  # both memory batches are the whole memory
    expected = 0.5 * ((out - stored) ** 2).mean() + 2.0 * F.cross_entropy(out, y_old)
    assert torch.isclose(loss, expected, rtol=1e-5)


def test_der_ace_lets_only_the_current_classes_compete_in_the_new_batch_loss():
    torch.manual_seed(0)
    model = ContinualClassifier(nn.Linear(2, 4), 1, 4)
    der = DER(DERPPConfig(memory=4, ace=True))
    der.before_task(model, 1)
    batch = der.extend_batch(Batch(torch.randn(3, 2), torch.tensor([2, 3, 2]), torch.zeros(3, dtype=torch.long)))
    assert batch.mask is not None and batch.mask.tolist() == [[False, False, True, True]] * 3
    logits = model(batch.x, batch.task).masked_fill(~batch.mask, float("-inf"))
    F.cross_entropy(logits, batch.y).backward()
    head = model.net.weight.grad
    assert torch.all(head[:2] == 0) and torch.any(head[2:] != 0)  # old classes' rows are not pushed down


def test_lwf_distillation_is_zero_when_the_model_equals_its_previous_copy():
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(4, (8,), 6), 2, 6)
    lwf = LwF(LwFConfig(distill=3.0))
    lwf.after_task(model, 0, [])
    x = torch.randn(5, 4)
    batch = Batch(x, torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    assert float(lwf.extra_loss(model, batch, model(x, batch.task)).detach()) == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model.head.weight.add_(torch.randn_like(model.head.weight))  # a change that moves the softmax
    assert float(lwf.extra_loss(model, batch, model(x, batch.task)).detach()) > 1e-3


def test_bic_never_trains_on_its_held_out_samples():
    strategy = build_strategy("replay+bic", {"memory": 50})
    assert [p.name for p in strategy.parts] == ["bic", "replay"]  # BiC sees the batch first
    assert strategy.parts[0].config.holdout == 5 and strategy.parts[1].config.memory == 45
    x = torch.arange(40.0).unsqueeze(1)
    batch = Batch(x, torch.arange(40) % 4, torch.zeros(40, dtype=torch.long))
    out = strategy.extend_batch(batch)
    held = set(strategy.parts[0].memory.all().x.squeeze(1).tolist())
    assert held and held.isdisjoint(set(out.x.squeeze(1).tolist()))


@pytest.fixture(scope="module")
def class_il_runs():
    def go(name, options):
        cfg = RunConfig(StreamConfig("split-digits", "class"), name, options,
                        LearnerConfig(epochs=10, batch_size=32), ModelConfig("mlp", (100, 100)), seed=0)
        return run(cfg).record

    return {name: go(name, opts) for name, opts in [("naive", {}), ("er-ace", {"memory": 100}),
                                                    ("der++", {"memory": 100})]}


def test_memory_methods_beat_naive_by_a_wide_margin_in_class_il(class_il_runs):
    naive = class_il_runs["naive"]["average_accuracy"]
    assert naive < 0.3  # only the newest classes are ever predicted
    best = max(r["average_accuracy"] for r in class_il_runs.values())
    assert best > naive + 0.5  # seeds 0-2: +0.67 to +0.69; ER-ACE recency bias 0.03-0.06 against naive 1.0
    assert class_il_runs["er-ace"]["recency_bias"] < class_il_runs["naive"]["recency_bias"]


def test_lwf_in_task_il_distils_one_softmax_per_old_head():
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(4, (8,), 6), 3, 6)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, :2], mask[1, 2:4], mask[2, 4:] = True, True, True
    model.set_class_mask(mask)
    lwf = LwF(LwFConfig(distill=1.0, temperature=2.0))
    lwf.after_task(model, 1, [])
    assert lwf.old_heads.tolist() == sorted(mask[:2].tolist())  # two heads, not one softmax over 4 classes
    old = model(torch.zeros(1, 4)).detach()
    with torch.no_grad():
        model.head.weight.add_(torch.randn_like(model.head.weight))
    x = torch.randn(5, 4)
    batch = Batch(x, torch.full((5,), 4), torch.full((5,), 2))
    with torch.no_grad():
        new, before = model(x), lwf.old_model(model)(x)
    expected = sum(distillation(new[:, h], before[:, h], 2.0) for h in (slice(0, 2), slice(2, 4)))
    got = lwf.extra_loss(model, batch, model(x, batch.task)).detach()
    assert float(got) == pytest.approx(float(expected), rel=1e-6) and old.shape == (1, 6)


def test_icarl_loss_is_sigmoid_bce_with_the_old_models_outputs_as_old_class_targets():
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(4, (8,), 4), 2, 4)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, :2] = True
    model.set_class_mask(mask)
    icarl = ICaRL(ICaRLConfig(memory=10))
    icarl.after_task(model, 0, [(torch.randn(6, 4), torch.tensor([0, 1] * 3))])
    mask[:, 2:] = True  # task 1's classes become live
    model.set_class_mask(mask)
    with torch.no_grad():
        model.head.weight.add_(0.5)
    x, y = torch.randn(5, 4), torch.tensor([2, 3, 2, 0, 3])
    batch = Batch(x, y, torch.ones(5, dtype=torch.long))
    logits = model(x, batch.task)
    with torch.no_grad():
        old = torch.sigmoid(icarl.distill.old_model(model)(x))
    target = F.one_hot(y, 4).float()
    target[:, :2] = old[:, :2]
    expected = F.binary_cross_entropy_with_logits(logits, target)
    assert float(icarl.loss(model, batch, logits).detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert icarl.extra_loss(model, batch, logits) is None  # the distillation is inside the BCE
    ce = ICaRL(ICaRLConfig(loss="ce")).loss(model, batch, logits)
    assert float(ce.detach()) == pytest.approx(float(F.cross_entropy(logits, y).detach()))


def test_bic_keeps_every_tasks_correction_of_its_own_classes():
    bic = BiC(BiCConfig())
    first, second = torch.tensor([False, False, True, True, False, False]), torch.tensor([False] * 4 + [True] * 2)
    bic.corrections = [(first, 2.0, 1.0), (second, 0.5, -1.0)]
    logits = torch.ones(1, 6)
    assert bic.predict(None, None, torch.zeros(1), logits).tolist() == [[1.0, 1.0, 3.0, 3.0, -0.5, -0.5]]
    restored = BiC(BiCConfig())
    restored.load_state_dict(bic.state_dict())
    assert restored.predict(None, None, torch.zeros(1), logits).tolist() == [[1.0, 1.0, 3.0, 3.0, -0.5, -0.5]]


def test_agem_takes_its_reference_gradient_in_eval_mode_and_leaves_the_model_training():
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(4, (8,), 4, dropout=0.5), 2, 4)
    agem = build_strategy("agem", {"memory": 20})
    agem.extend_batch(Batch(torch.randn(8, 4), torch.tensor([0, 1] * 4), torch.zeros(8, dtype=torch.long)))
    agem.before_task(model, 1)
    seen = []
    model.net.layers[0].register_forward_hook(lambda m, a, o: seen.append(model.training))
    model.train()
    F.cross_entropy(model(torch.randn(4, 4), torch.ones(4, dtype=torch.long)), torch.tensor([2, 3, 2, 3])).backward()
    agem.after_backward(model)
    assert seen == [True, False] and model.training  # the training pass, then the reference pass
