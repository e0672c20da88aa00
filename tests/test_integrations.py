"""lifelong's strategies in other training loops give what lifelong's own learner gives."""

import sys
from pathlib import Path

import pytest
import torch

from lifelong.data import BatchLoader, TaskData, load_digits, permuted
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.strategies import build_strategy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from own_training_loop import train


def test_the_three_call_user_loop_matches_the_learner():
    stream = permuted(*load_digits(), num_tasks=3)

    def same_importance_batches_as_the_learner(task):  # so that even the Fisher's float sums agree
        return BatchLoader([TaskData(task.train, task.id)], LearnerConfig().importance_batch, shuffle=True,
                           generator=torch.Generator().manual_seed(task.id))

    mine = train(stream, "ewc", {"strength": 100.0}, epochs=3, seed=0,
                 importance_data=same_importance_batches_as_the_learner)

    torch.manual_seed(0)
    model = ContinualClassifier(MLP(64, (128,), 10), len(stream), 10)
    learner = Learner(model, build_strategy("ewc", {"strength": 100.0}), LearnerConfig(epochs=3, seed=0))
    for task in stream:
        learner.fit(stream, task.id)
    for a, b in zip(mine.parameters(), model.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _permuted_loaders(tasks=2):
    stream = permuted(*load_digits(), num_tasks=tasks)
    train = [torch.utils.data.DataLoader(t.train, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(t.id)) for t in stream]
    return stream, train


def _accuracy(model, task):
    x, y = task.test.get_batch(torch.arange(len(task.test)))
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_lightning_callback_holds_what_the_first_task_needs_with_ewc():
    pytest.importorskip("lightning")
    import lightning as L

    from lifelong.integrations.lightning import ConsolidationCallback

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = MLP(64, (128,), 10)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    modules, callbacks, first = {}, {}, {}
    for name, options in (("naive", {}), ("ewc", {"strength": 1000.0})):
        stream, loaders = _permuted_loaders()  # fresh shuffling generators: the same order for both runs
        L.seed_everything(0, verbose=False)
        modules[name], callbacks[name] = Classifier(), ConsolidationCallback(build_strategy(name, options))
        for k, loader in enumerate(loaders):
            trainer = L.Trainer(max_epochs=10, callbacks=[callbacks[name]], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
            trainer.fit(modules[name], loader)
            if k == 0:
                first[name] = _accuracy(modules[name], stream[0])
        assert callbacks[name].task_id == 2 and set(callbacks[name].state_dict()) == {"task_id", "strategy"}
    assert first["naive"] == first["ewc"] > 0.8  # the first task is learned, the same way (no penalty yet)
    # EWC's own penalty (the Fisher-weighted distance from what the earlier tasks need) stays a small
    # share of where naive ends: what consolidation does, whatever a given CPU's kernels make of accuracy
    quadratic = callbacks["ewc"].strategy.quadratic
    with torch.no_grad():
        kept, moved = float(quadratic.value(modules["ewc"])), float(quadratic.value(modules["naive"]))
    assert kept < 0.2 * moved, (kept, moved)


def test_hugging_face_trainer_callback_holds_what_the_first_domain_needs_with_ewc(tmp_path):
    """A small BERT (MiniLM's tokenizer, 2 layers of width 64, random init: seconds, not minutes) learns
    two CLINC150 domains through `transformers.Trainer` with the callback. Both runs learn the first
    domain identically; EWC's penalty stays a small share of where naive ends."""
    transformers = pytest.importorskip("transformers")
    from lifelong import encoders as text
    from lifelong.data.text import clinc150_dir, load_clinc150

    if not text.encoder_available():
        pytest.skip("needs the text extra")
    try:
        clinc150_dir()
    except Exception as exc:
        pytest.skip(f"CLINC150 not found: {exc}")
    from lifelong.integrations.transformers import ConsolidationCallback

    data = load_clinc150()
    domains = list(data.domains)[:2]
    label = {intent: i for i, intent in enumerate(data.domains[domains[0]] + data.domains[domains[1]])}

    def dataset(domain, per_intent):
        seen, rows = {}, []
        for query, intent in data.splits["train"]:
            if intent in data.domains[domain] and seen.get(intent, 0) < per_intent:
                seen[intent] = seen.get(intent, 0) + 1
                rows.append((query, label[intent]))
        ids = text.tokenize([q for q, _ in rows])
        return [{"input_ids": i, "attention_mask": (i != 0).long(), "labels": y}
                for i, (_, y) in zip(ids, rows, strict=True)]

    train = [dataset(d, 8) for d in domains]
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=64, num_labels=30)
    models, callbacks, first_loss = {}, {}, {}
    for name, options in (("naive", {}), ("ewc", {"strength": 1e4, "samples": 64})):
        transformers.set_seed(0)
        models[name] = transformers.BertForSequenceClassification(config)
        callbacks[name] = ConsolidationCallback(build_strategy(name, options))
        for k, part in enumerate(train):
            args = transformers.TrainingArguments(
                output_dir=str(tmp_path / f"{name}-{k}"), per_device_train_batch_size=16, num_train_epochs=3,
                learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                seed=0, disable_tqdm=True)
            out = transformers.Trainer(model=models[name], args=args, train_dataset=part,
                                       callbacks=[callbacks[name]]).train()
            if k == 0:
                first_loss[name] = out.training_loss
        assert callbacks[name].task_id == 2
    assert first_loss["naive"] == first_loss["ewc"]  # the same first domain (no penalty yet)
    quadratic = callbacks["ewc"].strategy.quadratic
    with torch.no_grad():
        kept = float(quadratic.value(callbacks["ewc"]._view(models["ewc"])))
        moved = float(quadratic.value(callbacks["ewc"]._view(models["naive"])))
    assert kept < 0.2 * moved, (kept, moved)
