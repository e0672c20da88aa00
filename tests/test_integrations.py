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


def test_lightning_callback_keeps_more_of_the_first_task_with_ewc_than_without():
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

    stream, loaders = _permuted_loaders()
    first = {}
    for name, options in (("naive", {}), ("ewc", {"strength": 1000.0})):
        L.seed_everything(0, verbose=False)
        module = Classifier()
        callback = ConsolidationCallback(build_strategy(name, options))
        for loader in loaders:
            trainer = L.Trainer(max_epochs=10, callbacks=[callback], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
            trainer.fit(module, loader)
        first[name] = _accuracy(module, stream[0])
        assert callback.task_id == 2 and set(callback.state_dict()) == {"task_id", "strategy"}
    assert first["ewc"] > first["naive"] + 0.1, first


def test_hugging_face_trainer_callback_keeps_more_of_the_first_domain_with_ewc(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lifelong.data.text import clinc150_dir, load_clinc150
    from lifelong.models import text

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

    def dataset(split, domain, per_intent):
        seen, rows = {}, []
        for query, intent in data.splits[split]:
            if intent in data.domains[domain] and seen.get(intent, 0) < per_intent:
                seen[intent] = seen.get(intent, 0) + 1
                rows.append((query, label[intent]))
        ids = text.tokenize([q for q, _ in rows])
        return [{"input_ids": i, "attention_mask": (i != 0).long(), "labels": y}
                for i, (_, y) in zip(ids, rows, strict=True)]

    train = [dataset("train", d, 12) for d in domains]
    test_first = dataset("test", domains[0], 30)
    first = {}
    for name, options in (("naive", {}), ("ewc", {"strength": 1e6})):
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification.from_pretrained(
            str(text.encoder_dir()), num_labels=30, local_files_only=True)
        callback = ConsolidationCallback(build_strategy(name, options))
        for k, part in enumerate(train):
            args = transformers.TrainingArguments(
                output_dir=str(tmp_path / f"{name}-{k}"), per_device_train_batch_size=16, num_train_epochs=3,
                learning_rate=5e-4, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                seed=0, disable_tqdm=True)
            transformers.Trainer(model=model, args=args, train_dataset=part, callbacks=[callback]).train()
        with torch.no_grad():
            batch = {k: torch.stack([torch.as_tensor(row[k]) for row in test_first]) for k in ("input_ids",
                                                                                             "attention_mask")}
            logits = model.eval()(**batch).logits[:, :15]  # the first domain's own head (task-IL)
        labels = torch.tensor([row["labels"] for row in test_first])
        first[name] = float((logits.argmax(1) == labels).float().mean())
    assert first["ewc"] > first["naive"] + 0.05, first
