"""Token replay for language models: its budget shared by the tasks, its draws, the loss share of the
replayed windows, distinct windows, and the budget past which every run is the same run."""

import io
from dataclasses import replace

import pytest
import torch
from lm_util import needs_wordnet, tiny_run, windows

from lifelong.data.facts import FactsConfig
from lifelong.data.lm import LMDataConfig, sample_windows, window_dataset
from lifelong.data.task import Batch
from lifelong.lm.learner import next_token_loss
from lifelong.lm.run import LMRunConfig, build_stream, train_windows
from lifelong.strategies import build_strategy
from lifelong.strategies.token_replay import TokenReplay, TokenReplayConfig, keep_all_budget


def test_token_replay_keeps_its_budget_in_equal_shares_and_round_trips():
    replay = TokenReplay(TokenReplayConfig(tokens=9 * 6, seed=1))
    replay.after_task(None, 0, [windows(seed=0)])
    assert replay.nbytes == 9 * 6 and len(replay.windows[0]) == 6
    replay.after_task(None, 1, [windows(seed=1)])
    assert replay.nbytes == 9 * 6 and [len(w) for w in replay.windows.values()] == [3, 3]
    stored = replay.stored()
    assert torch.equal(stored.x[:, 1:].long(), stored.y[:, :-1])  # a stored window is one piece of text
    new = windows(n=4, seed=2)
    out = replay.extend_batch(new)
    assert len(out.y) == 8 and set(out.task[4:].tolist()) <= {0, 1}
    buffer = io.BytesIO()
    torch.save(replay.state_dict(), buffer)
    buffer.seek(0)
    again = TokenReplay(TokenReplayConfig(tokens=9 * 6, seed=7))
    again.load_state_dict(torch.load(buffer, weights_only=False))
    replay.load_state_dict(replay.state_dict())
    assert torch.equal(again.extend_batch(new).x, replay.extend_batch(new).x)


def test_token_replay_draws_from_the_memory_as_a_whole_and_sees_each_change_of_it():
    replay = TokenReplay(TokenReplayConfig(tokens=9 * 30, seed=4))
    replay.after_task(None, 0, [windows(n=40, seed=0)])
    state = replay.generator.get_state()
    drawn = replay.sample(5)
    stored = replay.stored()
    replay.generator.set_state(state)
    idx = torch.randperm(len(stored.y), generator=replay.generator)[:5]  # the draw over the joined memory
    assert torch.equal(drawn.x, stored.x[idx]) and torch.equal(drawn.y, stored.y[idx])
    replay.after_task(None, 1, [windows(n=40, seed=1)])  # the memory changed: the next draws see task 1
    assert len(replay.stored().y) == 30 and set(replay.sample(30).task.tolist()) == {0, 1}
    replay.load_state_dict({**replay.state_dict(), "windows": {7: replay.windows[0]}})
    assert set(replay.sample(30).task.tolist()) == {7}


def test_first_share_sets_how_much_of_each_replayed_batch_is_the_first_task():
    replay = TokenReplay(TokenReplayConfig(tokens=9 * 30, first_share=0.75, seed=3))
    for t in range(3):
        replay.after_task(None, t, [windows(n=40, seed=t)])
    assert [len(w) for w in replay.windows.values()] == [10, 10, 10]  # memory is still shared evenly
    assert (replay.sample(8).task == 0).sum() == 6  # 3/4 of a batch, though the first task is 1/3 of memory
    even = TokenReplay(TokenReplayConfig(tokens=9 * 30, seed=3))
    even.load_state_dict(replay.state_dict())
    assert sum((even.sample(8).task == 0).sum().item() for _ in range(50)) < 200  # about 8/3 a batch
    with pytest.raises(ValueError, match="first_share"):
        TokenReplayConfig(first_share=1.5)


def test_replay_weight_fixes_the_old_windows_share_of_the_loss_whatever_their_number():
    replay = TokenReplay(TokenReplayConfig(tokens=9 * 40, replay_batch=8, replay_weight=0.25, seed=2))
    replay.after_task(None, 0, [windows(n=40, seed=0)])
    replay.before_task(None, 1)
    batch = replay.extend_batch(windows(n=4, seed=1)._replace(task=torch.ones(4, dtype=torch.long)))
    assert len(batch.y) == 12
    logits = torch.randn(12, batch.y.shape[1], 256)
    new, old = batch.task == 1, batch.task == 0
    expected = 0.75 * next_token_loss(logits[new], batch.y[new]) + 0.25 * next_token_loss(logits[old], batch.y[old])
    assert torch.allclose(replay.loss(None, batch, logits), expected)
    by_count = TokenReplay(TokenReplayConfig(tokens=9 * 40, replay_batch=8))
    by_count.before_task(None, 1)
    assert torch.allclose(by_count.loss(None, batch, logits), next_token_loss(logits, batch.y))  # 8 of 12: 2/3
    with pytest.raises(ValueError, match="replay_weight"):
        TokenReplayConfig(replay_weight=-0.1)


@needs_wordnet
def test_in_a_run_a_replay_weight_equal_to_the_replayed_share_changes_nothing_and_another_does():
    options = {"tokens": 2 * 33 * 8, "replay_batch": 8}
    by_count = tiny_run("token-replay", options)["scores"][-1]
    same = tiny_run("token-replay", {**options, "replay_weight": 2 / 3})["scores"][-1]  # 8 of 12 windows
    other = tiny_run("token-replay", {**options, "replay_weight": 0.1})["scores"][-1]
    assert [s["loss"] for s in same] == pytest.approx([s["loss"] for s in by_count], rel=1e-4)
    assert [s["loss"] for s in other] != pytest.approx([s["loss"] for s in by_count], rel=1e-3)


def test_distinct_token_replay_keeps_more_of_a_repeated_text_than_random_windows():
    # a "fact batch": 12 lines of 7 bytes, each round of them shuffled, 20 rounds (as facts_stream builds it)
    lines = [bytes([65 + i]) * 6 for i in range(12)]
    g = torch.Generator().manual_seed(0)
    text = b"\n" + b"\n".join(b"\n".join(lines[i] for i in torch.randperm(12, generator=g)) for _ in range(20)) + b"\n"
    w = window_dataset(sample_windows(torch.tensor(list(text), dtype=torch.uint8), 200, 29, g))
    batch = Batch(w.x, w.y, torch.zeros(200, dtype=torch.long))

    def lines_kept(select):
        replay = TokenReplay(TokenReplayConfig(tokens=30 * 5, select=select))
        replay.after_task(None, 0, [batch])
        assert len(replay.windows[0]) == 5  # the same budget either way
        return {bytes(seg) for row in replay.windows[0].tolist() for seg in bytes(row).split(b"\n")[1:-1] if seg}

    assert len(lines_kept("distinct")) == 12 > len(lines_kept("random")) == 10  # every line, in 5 windows
    with pytest.raises(ValueError, match="select"):
        TokenReplayConfig(select="best")


def test_past_the_budget_that_keeps_every_window_a_larger_budget_keeps_and_draws_the_same():
    tasks = [windows(n=10, seed=0), windows(n=6, seed=1), windows(n=6, seed=2)]
    budget = keep_all_budget([10, 6, 6], window_tokens=9)

    def memory(tokens):
        replay = TokenReplay(TokenReplayConfig(tokens=tokens, seed=5))
        for t, batch in enumerate(tasks):
            replay.after_task(None, t, [batch])
        return replay

    kept, larger, short = memory(budget), memory(5 * budget), memory(budget - 1)
    assert [len(w) for w in kept.windows.values()] == [10, 6, 6] and kept.nbytes == 22 * 9
    assert all(torch.equal(kept.windows[t], larger.windows[t]) for t in range(3))
    assert torch.equal(kept.sample(7).x, larger.sample(7).x)  # the same draws too: one run
    assert [len(w) for w in short.windows.values()] == [9, 6, 6]  # a token less and the largest task gives one up


@needs_wordnet
@pytest.mark.parametrize("benchmark", ["text-domains", "facts"])
def test_train_windows_counts_every_task_the_strategy_meets(benchmark):
    data = LMDataConfig(pretrain_steps=3, steps=2, batch_size=4, length=32, eval_windows=4,
                        facts=FactsConfig(batches=2, entities_per_batch=2, background_entities=3))
    for d in (data, replace(data, pretrain_steps=0)):
        config = LMRunConfig(benchmark, "gpt-0.2m", "token-replay", {}, d, domains=("python-code", "wordnet"))
        stream = build_stream(config)
        met = stream.tasks if d.pretrain_steps else stream.tasks[1:]  # no pre-training: no general task
        assert train_windows(config) == [len(task.train) for task in met]


@needs_wordnet
def test_a_run_asked_for_more_than_keeps_every_window_is_the_run_that_keeps_them_all():
    tokens = keep_all_budget([6 * 4, 4 * 4, 4 * 4], window_tokens=33)  # tiny_run: general mixture, 2 domains
    kept, larger = tiny_run("token-replay", {"tokens": tokens}), tiny_run("token-replay", {"tokens": 4 * tokens})
    assert kept["scores"] == larger["scores"] and kept["stored_bytes"] == larger["stored_bytes"]
    assert tiny_run("token-replay", {"tokens": tokens - 1})["stored_bytes"] < kept["stored_bytes"]


def test_token_replay_refuses_data_that_is_not_text_windows():
    replay = build_strategy("token-replay")
    with pytest.raises(ValueError, match="language-model windows"):
        replay.after_task(None, 0, [(torch.randn(8, 4), torch.randint(0, 3, (8,)))])
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        TokenReplayConfig(tokens=-1)
