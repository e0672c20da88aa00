"""Language models that keep learning: text streams, the LM learner, distillation, facts (token replay:
test_lm_token_replay.py)."""

from dataclasses import replace

import pytest
import torch
from lm_util import DEVICES, needs_wordnet, tiny_run, windows

from lifelong.data.facts import FactsConfig, FactWorld, asked_forms
from lifelong.data.lm import FactEvaluator, LMDataConfig, facts_stream
from lifelong.data.task import Batch
from lifelong.importance.estimate import IGNORE_INDEX
from lifelong.lm.learner import next_token_loss
from lifelong.lm.run import LMRunConfig
from lifelong.models.gpt import GPT, GPTConfig
from lifelong.strategies import build_strategy
from lifelong.strategies.lm_distill import LMDistill, LMDistillConfig, token_kl


@needs_wordnet
def test_a_two_domain_run_scores_every_task_after_every_task_and_repeats_exactly():
    options = {"strength": 10.0, "samples": 8, "tokens": 2 * 33 * 3}
    result = tiny_run("ewc+token-replay", options)
    scores = result["scores"]
    assert result["tasks"] == ["general", "python-code", "wordnet"] and len(scores) == 3
    assert all(set(s) == {"loss", "accuracy"} for row in scores for s in row)
    m = result["metrics"]
    assert m["general_loss_before"] == scores[0][0]["loss"] and m["general_loss_after"] == scores[2][0]["loss"]
    assert m["average_accuracy"] == pytest.approx(scores[2][2]["accuracy"] / 2 + scores[2][1]["accuracy"] / 2)
    assert m["loss_rise"] == pytest.approx(scores[2][1]["loss"] - scores[1][1]["loss"])
    # EWC's two floats per parameter and the replayed windows (budget shared by general and domain 1)
    assert result["stored_bytes"] >= 8 * result["parameters"] + 2 * 33 * 3 - 33
    assert tiny_run("ewc+token-replay", options)["scores"] == scores


@needs_wordnet
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("strategy", "options", "kind"), [
    ("ewc+token-replay", {"strength": 1.0, "samples": 8, "tokens": 200}, "text-domains"),
    ("token-replay+lm-distill", {"tokens": 200}, "text-domains"),
    ("lm-distill", {"source": "generated", "generated_tokens": 200}, "text-domains"),
    ("ewc+token-replay+lm-distill", {"samples": 8, "tokens": 200, "select": "distinct", "age_decay": 0.5,
                                     "first_weight": 0.0}, "facts"),
])
def test_every_language_method_runs_where_its_model_is(device, strategy, options, kind):
    """Replayed windows, generated text, fact questions and the importance pass all follow the model
    to its device (on a GPU host this runs on CUDA too; before, replayed windows stayed on the CPU)."""
    facts = FactsConfig(batches=2, entities_per_batch=2, background_entities=3)
    result = tiny_run(strategy, options, kind, device, facts=facts)
    assert result["config"]["device"] == device and len(result["scores"]) == 3
    assert result["stored_bytes"] > 0 and all(v == v for k, v in result["metrics"].items() if k != "average_retention")
    if kind == "facts":  # the trained question form and each held-out form alone, for every batch learned
        assert all({"taught_match", "held_out_0_match", "held_out_2_match"} <= set(row[j])
                   for i, row in enumerate(result["scores"]) for j in range(1, i + 1))


def test_a_corpus_snapshot_reads_back_the_same_text_and_refuses_a_damaged_one(tmp_path, monkeypatch):
    from lifelong.data.corpora import load_corpus, save_snapshot
    from lifelong.data.vision import DataError

    direct = load_corpus("python-code", 50_000)
    (path,) = save_snapshot(tmp_path, ["python-code"], max_bytes=50_000)
    monkeypatch.setenv("LIFELONG_CORPORA", str(tmp_path))
    assert load_corpus("python-code", 50_000).digest == direct.digest
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot be read"):
        load_corpus("python-code", 50_000)
    assert load_corpus("python-code", 60_000).digest != direct.digest  # no snapshot of that cap: the sources


@needs_wordnet
@pytest.mark.parametrize("strategy", ["kfac-ewc", "gpm"])
def test_the_methods_beyond_the_diagonal_run_on_a_gpt(strategy):
    result = tiny_run(strategy, {"samples": 8})
    assert len(result["scores"]) == 3 and all(len(row) == 3 for row in result["scores"])
    assert result["stored_bytes"] > 0 and all(v == v for v in result["metrics"].values())  # no NaN


def test_the_next_token_loss_skips_padding():
    logits = torch.randn(2, 5, 7)
    y = torch.randint(0, 7, (2, 5))
    padded = y.clone()
    padded[1, 3:] = IGNORE_INDEX
    keep = padded != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(next_token_loss(logits, padded), expected)
    # the learner's loss is the strategy's `loss` hook, whose default takes sequences the same way
    batch = Batch(torch.zeros(2, 5, dtype=torch.long), padded, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(build_strategy("naive").loss(None, batch, logits), expected)


def test_language_and_classifier_distillation_are_two_strategies():
    from lifelong.strategies.distill import Distill

    assert isinstance(build_strategy("distill"), Distill)  # stored inputs and old outputs (classifiers, agents)
    both = build_strategy("ewc+token-replay+lm-distill", {"weight": 0.3, "tokens": 64, "strength": 2.0})
    assert [p.name for p in both.parts] == ["ewc", "token-replay", "lm-distill"]
    assert both.parts[2].config.weight == 0.3 and both.parts[1].config.tokens == 64
    assert not both.parts[2].extra_forward and build_strategy("lm-distill", {"source": "generated"}).extra_forward


def test_distillation_is_zero_against_itself_and_resumes_to_the_same_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    old = windows()
    for source in ("replay", "new", "generated"):
        strategy = LMDistill(LMDistillConfig(source=source, generated_tokens=4 * 9, generated_batch=3))
        strategy.after_task(model, 0, [old])
        strategy.before_task(model, 1)
        batch = Batch(old.x, old.y, torch.tensor([1] * 6 + [0] * 6))
        loss = strategy.extra_loss(model, batch, model(batch.x))
        assert loss is not None and float(loss.detach()) == pytest.approx(0.0, abs=1e-6), source  # teacher = model
        nudge = 0.05 * torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model.lm_head.weight.add_(nudge)
        resumed = LMDistill(LMDistillConfig(source=source, generated_tokens=4 * 9, generated_batch=3, seed=3))
        resumed.load_state_dict(strategy.state_dict())
        a = strategy.extra_loss(model, batch, model(batch.x))
        b = resumed.extra_loss(model, batch, model(batch.x))
        assert a is not None and b is not None and float(a.detach()) > 0 and torch.allclose(a, b), source
        with torch.no_grad():
            model.lm_head.weight.sub_(nudge)
    assert strategy.generated is not None and strategy.generated.shape == (4, 9)
    with pytest.raises(ValueError, match="source must be one of"):
        LMDistillConfig(source="memory")


def test_generated_text_can_start_at_line_starts_and_keep_every_tasks_samples():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    strategy = LMDistill(LMDistillConfig(source="generated", generated_tokens=4 * 9, start="line", keep_generated=True))
    strategy.after_task(model, 0, [windows()])
    first = strategy.generated.clone()
    assert first.shape == (4, 9) and bool((first[:, 0] == 10).all())  # every sample begins a line
    strategy.after_task(model, 1, [windows()])
    assert strategy.generated.shape == (8, 9) and torch.equal(strategy.generated[:4], first)  # task 0's kept
    resumed = LMDistill(LMDistillConfig(source="generated", generated_tokens=4 * 9, start="line", keep_generated=True))
    resumed.load_state_dict(strategy.state_dict())
    assert torch.equal(resumed.generated, strategy.generated)
    text = b"Vorland has its capital at Quesmir.\nQ: Who leads Vorland? A: Ka Tor\nVorland exports tea.\n"
    lines = torch.tensor([list(text[i:i + 9]) for i in range(0, 72, 6)], dtype=torch.uint8)
    words = LMDistill(LMDistillConfig(source="generated", generated_tokens=6 * 9, start="word"))
    words.after_task(model, 0, [(lines, lines)])
    starts = {bytes(row[:10].tolist()).split(b" ")[0] + b" " for row in words.generated}
    assert words.generated.shape == (5, 10) and starts <= {b"\nQ: ", b"\nVorland "}  # the teacher goes on from a word
    with pytest.raises(ValueError, match="start must be one of"):
        LMDistillConfig(start="sentence")


def test_token_kl_is_the_mean_kl_per_token():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    p = torch.softmax(t, -1)
    expected = (p * (torch.log_softmax(t, -1) - torch.log_softmax(s, -1))).sum(-1).mean()
    assert torch.allclose(token_kl(s, t, 1.0), expected, atol=1e-6)


def test_distillation_weighs_replayed_rows_by_their_task():
    torch.manual_seed(0)
    model, teacher = (GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)) for _ in range(2))
    old = windows()
    batch = Batch(old.x, old.y, torch.tensor([3] * 4 + [2] * 4 + [0] * 4))  # new task 3, old tasks 2 and 0

    def loss(**options):
        strategy = LMDistill(LMDistillConfig(weight=2.0, **options))
        strategy.after_task(teacher, 2, [old])
        strategy.before_task(model, 3)
        out = strategy.extra_loss(model, batch, model(batch.x))
        assert out is not None
        return float(out.detach())

    with torch.no_grad():
        s, t = model(batch.x), teacher(batch.x)
    kl = [float(token_kl(s[i:i + 4], t[i:i + 4], 1.0)) for i in (4, 8)]  # task 2 (age 0), task 0 (age 2)
    assert loss(age_decay=1.0, first_weight=2.0) == pytest.approx(loss(), rel=1e-5)  # the same weights as before
    assert loss(age_decay=0.5) == pytest.approx((2.0 * kl[0] + 2.0 * 0.25 * kl[1]) / 2, rel=1e-5)
    assert loss(first_weight=0.0) == pytest.approx(2.0 * kl[0] / 2, rel=1e-5)  # the new task's rows never count
    with pytest.raises(ValueError, match="age_decay"):
        LMDistillConfig(age_decay=1.5)


class Oracle:
    """Answers every question with the right value (or a wrong one for one relation)."""

    def __init__(self, world, wrong=None):
        from lifelong.data.corpora import encode

        self.encode = encode
        self.answers = {q: f.value for batch in world.batches for f in batch for q in world.question(f, "test")}
        self.wrong = wrong

    def generate(self, idx, max_new_tokens, temperature=0, stop=None):
        from lifelong.data.corpora import decode

        rows = []
        for row in idx:
            prompt = decode(row)[1:]
            value = self.answers[prompt]
            if self.wrong and self.wrong in prompt:
                value += "x"
            rows.append(torch.cat([row, self.encode(f" {value}\n").to(row.dtype)]))
        width = max(len(r) for r in rows)
        return torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=10) for r in rows])


def test_fact_questions_are_held_out_and_scored_by_exact_match():
    world = FactWorld(FactsConfig(batches=2, entities_per_batch=3, background_entities=5))
    fact = world.batches[0][0]
    taught = "\n".join(world.taught(fact))
    for q in world.question(fact, "test") + world.question(fact, "valid"):
        assert q not in taught and q.endswith("A:")
    asked = world.question(fact, "taught")  # the diagnosis: the trained question form, asked the same way
    assert len(asked) == 1 and asked[0] + f" {fact.value}" in taught.splitlines()
    forms = [world.question(fact, f"held-out-{k}") for k in range(3)]  # the other diagnosis: one form at a time
    assert forms[0] == world.question(fact, "valid") and forms[1] + forms[2] == world.question(fact, "test")
    with pytest.raises(ValueError, match="held-out-2"):
        world.question(fact, "held-out-3")
    background = world.background_text()
    assert all(f.entity not in background for batch in world.batches for f in batch)
    evaluator = FactEvaluator(world.batches[0])
    assert evaluator(Oracle(world), 1, "test") == 1.0
    assert evaluator(Oracle(world, wrong="capital"), 1, "test") == pytest.approx(4 / 5)


def test_a_valid_facts_world_validates_on_its_own_facts_in_the_tests_forms():
    config = FactsConfig(batches=2, entities_per_batch=3, background_entities=5)
    plain, own = FactWorld(config), FactWorld(replace(config, valid_facts=True))
    # the same background and test facts (validation's are drawn after them), so the same pre-training
    assert (own.background, own.batches) == (plain.background, plain.batches)
    assert own.stream("test") == plain.stream("test") == plain.stream("valid") == plain.batches
    tested = {f.entity for batch in own.batches for f in batch} | {f.entity for f in own.background}
    assert len(own.stream("valid")) == 2 and not tested & {f.entity for b in own.stream("valid") for f in b}
    # validation then asks the test's forms (the entity-first one among them), not form 0
    assert asked_forms(own.config, "valid") == asked_forms(own.config, "test") == asked_forms(config, "test") == (1, 2)
    assert asked_forms(config, "valid") == (0,)
    data = LMDataConfig(pretrain_steps=1, steps=2, batch_size=4, eval_windows=5, facts=own.config)
    stream = facts_stream(data, domains=("python-code",), split="valid")
    assert stream[1].evaluator.facts == own.valid_batches[0]
    # off, the field is left out of a saved configuration: runs saved before it keep their keys
    assert "valid_facts" not in LMRunConfig("facts", data=replace(data, facts=config)).to_dict()["data"]["facts"]
    assert LMRunConfig("facts", data=data).to_dict()["data"]["facts"]["valid_facts"] is True


@needs_wordnet
def test_a_run_names_the_pretrained_weights_it_started_from_whether_trained_or_cached(tmp_path):
    """Runs compared with each other must start from one pre-trained model; a cache lost and pre-trained
    again (another thread count sums in another order) gives another, which the fingerprint shows."""
    from lifelong.lm.run import pretrained_model, weights_fingerprint

    data = LMDataConfig(pretrain_steps=3, steps=2, batch_size=4, length=32, eval_windows=4)
    cfg = LMRunConfig("text-domains", "gpt-0.2m", "naive", {}, data, domains=("python-code", "wordnet"),
                      cache_dir=str(tmp_path))
    trained, made = pretrained_model(cfg)
    cached, loaded = pretrained_model(cfg)
    assert not made["cached"] and loaded["cached"] and made["weights"] == loaded["weights"]
    assert (loaded["threads"], loaded["device"]) == (torch.get_num_threads(), "cpu")  # how the cached model was made
    with torch.no_grad():
        next(cached.parameters()).view(-1)[0] += 1e-6
    assert weights_fingerprint(cached) != made["weights"] == weights_fingerprint(trained)


@needs_wordnet
def test_runs_started_together_on_a_cold_cache_pre_train_once(tmp_path):
    """`--jobs` starts runs of one size together: while one pre-trains (it holds the cache's lock), another
    waits and then loads that model instead of pre-training the same one again."""
    import fcntl
    import shutil
    import threading

    from lifelong.lm.run import pretrain_cache_path, pretrained_model

    data = LMDataConfig(pretrain_steps=3, steps=2, batch_size=4, length=32, eval_windows=4)
    cfg = LMRunConfig("text-domains", "gpt-0.2m", "naive", {}, data, domains=("python-code", "wordnet"),
                      cache_dir=str(tmp_path / "shared"))
    elsewhere = replace(cfg, cache_dir=str(tmp_path / "elsewhere"))
    _, made = pretrained_model(elsewhere)  # the model the "other process" is making
    path = pretrain_cache_path(cfg)
    path.parent.mkdir(parents=True)
    said: list[str] = []
    result: list[dict] = []
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other process is pre-training
        waiter = threading.Thread(target=lambda: result.append(pretrained_model(cfg, said.append)[1]))
        waiter.start()
        for _ in range(500):
            if said:
                break
            threading.Event().wait(0.01)
        assert said and said[0].startswith("waiting for another process pre-training gpt-0.2m")
        assert waiter.is_alive() and not result
        shutil.copy(pretrain_cache_path(elsewhere), path)  # it finishes and writes the cache
    waiter.join(30)
    assert result[0]["cached"] and result[0]["weights"] == made["weights"]
    assert not any(line.startswith("pre-training") for line in said)
