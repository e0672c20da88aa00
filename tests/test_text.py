"""CLINC150 with the real MiniLM encoder, on small slices."""

import pytest
import torch

from lifelong import encoders as text
from lifelong.data import DataError, StreamConfig, build_stream
from lifelong.data.text import clinc150_dir, clinc150_stream, load_clinc150

pytestmark = pytest.mark.skipif(not text.encoder_available(), reason="needs the text extra")

try:
    clinc150_dir()
    HAVE_CLINC = True
except DataError:
    HAVE_CLINC = False
needs_clinc = pytest.mark.skipif(not HAVE_CLINC, reason="CLINC150 not found beside the repository")


@pytest.fixture(scope="module")
def clinc():
    return load_clinc150()


@needs_clinc
def test_loader_counts_and_label_mapping(clinc):
    assert len(clinc.intents) == 150 and len(clinc.domains) == 10
    stream = clinc150_stream(clinc, lambda texts: torch.zeros(len(texts), 1), "task", num_tasks=3, per_intent=20)
    assert [t.name for t in stream] == ["banking", "credit_cards", "kitchen_and_dining"]
    for k, task in enumerate(stream):
        assert task.classes == tuple(range(15 * k, 15 * k + 15))
        assert torch.bincount(task.train.y, minlength=150)[list(task.classes)].tolist() == [20] * 15
        assert len(task.test) == 15 * 30 and len(task.valid) == 15 * 4
    assert stream.class_names[stream[1].classes[0]] == clinc.domains["credit_cards"][0]
    assert len(clinc.splits["oos_test"]) == 1000  # out-of-scope queries: in no task
    shuffled = clinc150_stream(clinc, lambda t: torch.zeros(len(t), 1), "class", 10, order="random", seed=4,
                               per_intent=1)
    names = [t.name for t in shuffled]
    assert sorted(names) == sorted(clinc.domains) and names != list(clinc.domains)
    # an intent keeps its label whatever the order
    banking = next(t for t in shuffled if t.name == "banking")
    assert banking.classes == tuple(range(15))


def test_missing_data_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CLINC150", str(tmp_path))
    with pytest.raises(DataError, match="LIFELONG_CLINC150"):
        load_clinc150()


def test_embedding_cache_hits_on_a_second_run(tmp_path):
    texts = ["what is my balance", "book a flight to paris", "what is my balance"]
    first = text.EmbeddingCache(tmp_path)
    a = first.embed(texts)
    assert first.computed == 2 and a.shape == (3, 384)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)  # all-MiniLM-L6-v2 embeddings are unit length
    second = text.EmbeddingCache(tmp_path)
    b = second.embed(texts)
    assert second.computed == 0 and torch.equal(a, b)


def test_padding_does_not_change_the_sentence_embedding():
    enc = text.load_encoder().eval()
    ids = text.tokenize(["turn off the lights", "what is the weather like in the afternoon"], max_tokens=24)
    with torch.no_grad():
        together = enc(ids)
        alone = enc(ids[:1, :8])
    assert torch.allclose(together[0], alone[0], atol=1e-5)



def test_big_inference_batches_run_by_length_and_give_the_same_embeddings():
    enc = text.load_encoder().eval()
    query = "please tell me how much money is left in my checking account right now"
    queries = [" ".join(query.split()[: 2 + i % 12]) for i in range(text.INFERENCE_CHUNK * 2 + 5)]
    ids = text.tokenize(queries)
    with torch.no_grad():
        by_length = enc(ids)  # sorted by length, chunked, put back in order
    with torch.enable_grad():
        whole = enc(ids).detach()  # one batch cut to its longest query
    assert torch.allclose(by_length, whole, atol=1e-5)

@needs_clinc
def test_ewc_holds_the_fine_tuned_encoder_where_the_first_domain_needs_it(tmp_path, monkeypatch):
    """The whole MiniLM encoder fine-tuned on two domains: both runs learn the first domain the same
    way; EWC's penalty (its Fisher-weighted distance from that solution) stays a small share of where
    naive ends. (Accuracy margins of a 2-domain run vary between CPUs; the benchmarks measure those.)"""
    from lifelong.learner import LearnerConfig
    from lifelong.run import RunConfig, run

    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    stream = build_stream(StreamConfig("clinc150", "task", tasks=2, encoder="finetune", per_intent=6))
    done = {}
    for name, options in (("naive", {}), ("ewc", {"strength": 1e6, "samples": 60})):  # the encoder's Fisher is tiny
        cfg = RunConfig(StreamConfig("clinc150"), name, options, LearnerConfig(epochs=2, batch_size=16, lr=5e-4),
                        eval_split="valid")  # CLINC150's own validation queries: 15 a domain here, not 450
        done[name] = run(cfg, stream=stream)
    first = [r.record["accuracy_matrix"][0][0] for r in done.values()]
    assert first[0] == first[1] > 0.5  # the first domain, learned the same way by both
    quadratic = done["ewc"].strategy.quadratic
    with torch.no_grad():
        kept, moved = float(quadratic.value(done["ewc"].model)), float(quadratic.value(done["naive"].model))
    assert kept < 0.2 * moved, (kept, moved)
