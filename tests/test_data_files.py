"""Streams from a user's own files: every loader on small generated files, the cuts (a task column, time,
groups of classes), the fixed test rows, spilling large inputs to a memory map, and bad inputs: one clear
message each, exit code 2 from the command line, nothing written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from lifelong.cli import main
from lifelong.data import files, rows
from lifelong.data.files import Cut, cut_table, file_stream, read_table
from lifelong.data.spec import SpecError, parse
from lifelong.data.streams import StreamConfig, build_stream, check
from lifelong.data.task import InputSpec, fetch

RNG = np.random.default_rng(0)


def _csv(path, n=120, domains=("north", "south"), sep=",", seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 3))
    rows = [sep.join(["a", "b", "c", "label", "shop", "when"])]
    for i in range(n):
        label = "yes" if x[i, 0] > 0 else "no"
        day = f"2024-0{1 + (i * 6) // n}-{1 + i % 28:02d}"
        rows.append(sep.join([f"{v:.4f}" for v in x[i]] + [label, domains[i * len(domains) // n], day]))
    path.write_text("\n".join(rows) + "\n")
    return path


def _fake_text(texts):
    """A stand-in for the MiniLM features: the length and the vowel count of each text."""
    return torch.tensor([[len(t), sum(c in "aeiou" for c in t)] for t in texts], dtype=torch.float32)


def _all(data):
    return fetch(data, torch.arange(len(data)))


# -- loaders -----------------------------------------------------------------------------------------------
def test_csv_cut_by_a_task_column_keeps_the_same_test_rows_for_every_seed(tmp_path):
    path = _csv(tmp_path / "sales.csv")
    a = file_stream(f"csv:{path},label=label,task=shop", Cut(seed=0, validation=0.1))
    b = file_stream(f"{path},task=shop", Cut(seed=1, validation=0.1))
    assert [t.name for t in a] == ["north", "south"] and a.scenario == "domain" and a.class_names == ["no", "yes"]
    assert [(len(t.train), len(t.valid), len(t.test)) for t in a] == [(44, 4, 12)] * 2
    for ta, tb in zip(a, b, strict=True):
        assert torch.equal(ta.test.rows, tb.test.rows) and torch.equal(ta.valid.rows, tb.valid.rows)
    x, y = _all(a[0].train)
    assert x.shape == (44, 3) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}
    assert torch.equal(y, (x[:, 0] > 0).long())  # the features and the labels stayed row for row together


def test_the_csv_module_reads_what_pyarrow_reads(tmp_path, monkeypatch):
    path = _csv(tmp_path / "sales.tsv", sep="\t")
    spec = parse(f"{path},task=shop,time=when".replace(",time=when", ""))
    with_arrow = read_table(spec)
    monkeypatch.setattr(files.CsvSource, "chunks", files.CsvSource._chunks_csv_module)
    files._CACHE.clear()
    plain = read_table(spec)
    assert torch.equal(with_arrow.x, plain.x) and np.array_equal(with_arrow.y, plain.y)
    assert with_arrow.task_names == plain.task_names == ["north", "south"]


def test_text_is_featurised_and_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "featurizer", lambda encoder: _fake_text)
    path = tmp_path / "tickets.csv"
    rows = ['body,intent,product'] + [f'"where is my parcel, number {i}",track,{p}' for i, p in
                                      zip(range(20), ["web", "app"] * 10, strict=True)]
    rows += [f"refund please {i},refund,{p}" for i, p in zip(range(20), ["web", "app"] * 10, strict=True)]
    path.write_text("\n".join(rows))
    stream = file_stream(f"csv:{path},text=body,label=intent,task=product", encoder="frozen")
    assert stream.input.encoder == "frozen" and stream.class_names == ["refund", "track"]
    x, y = _all(stream[0].train)
    assert x.shape[1] == 2 and torch.equal(y, (x[:, 0] > 20).long())  # the long texts are the parcels


def test_jsonl_vectors_cut_into_time_windows(tmp_path):
    path = tmp_path / "feedback.jsonl"
    with path.open("w") as f:
        for i in reversed(range(60)):  # newest first: the windows must come out in time order anyway
            f.write(json.dumps({"v": [i, i % 3], "label": i % 4, "at": f"2025-03-{1 + i // 2:02d}T10:00:00Z"}) + "\n")
    stream = file_stream(f"jsonl:{path},features=v,time=at", Cut(tasks=3))
    assert [t.name for t in stream] == ["2025-03-01 to 2025-03-10", "2025-03-11 to 2025-03-20",
                                        "2025-03-21 to 2025-03-30"]
    assert stream.scenario == "domain" and stream.class_names == ["0", "1", "2", "3"]
    first = _all(stream[0].train)[0][:, 0]
    assert first.max() < 20 <= _all(stream[1].test)[0][:, 0].min()


def test_parquet_class_groups_compose_with_tasks_and_an_explicit_order(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    y = np.repeat(np.arange(6), 10)
    pq.write_table(pa.table({"s1": RNG.normal(size=60), "s2": RNG.normal(size=60), "state": y}), tmp_path / "s.parquet")
    spec = f"{tmp_path / 's.parquet'},label=state"
    assert [t.classes for t in file_stream(spec, Cut(classes_per_task=2))] == [(0, 1), (2, 3), (4, 5)]
    assert [t.classes for t in file_stream(spec, Cut(classes_per_task=2, tasks=2))] == [(0, 1), (2, 3)]
    ordered = file_stream(spec + ",order=5+4+3+2+1+0", Cut(classes_per_task=3, scenario="class"))
    assert [t.classes for t in ordered] == [(3, 4, 5), (0, 1, 2)] and ordered.scenario == "class"
    with pytest.warns(UserWarning, match="classes 4, 5 are in no task"):
        assert len(file_stream(spec, Cut(classes_per_task=4))) == 1


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_arrays_with_their_own_test_rows(tmp_path, save):
    x = RNG.normal(size=(40, 2, 3)).astype(np.float32)
    save(tmp_path / "a.npz", x=x, y=np.arange(40) % 4, x_test=x[:8], y_test=np.arange(8) % 4)
    stream = file_stream(f"{tmp_path / 'a.npz'}", Cut(classes_per_task=2))
    assert [len(t.test) for t in stream] == [4, 4] and [len(t.train) for t in stream] == [20, 20]
    xb, _ = _all(stream[1].train)
    assert xb.shape == (20, 2, 3) and torch.equal(xb, torch.from_numpy(x[np.arange(40) % 4 >= 2]))
    assert stream.input_spec == InputSpec("array", (2, 3))  # numbers the model sees as they are


def test_npz_bytes_are_pixels_a_service_takes_as_the_file_holds_them(tmp_path):
    """uint8 arrays are scaled by 1/255 on the way in: the input spec says so, and [N, 1|3, H, W] are pictures."""
    y = np.arange(40) % 2
    np.savez(tmp_path / "p.npz", x=RNG.integers(0, 256, size=(40, 3, 4, 4), dtype=np.uint8), y=y)
    np.savez(tmp_path / "b.npz", x=RNG.integers(0, 256, size=(40, 6), dtype=np.uint8), y=y)
    assert file_stream(f"{tmp_path / 'p.npz'}", Cut(classes_per_task=1)).input_spec == \
        InputSpec("image", (3, 4, 4), pixels=True)
    assert file_stream(f"{tmp_path / 'b.npz'}", Cut(classes_per_task=1)).input_spec == \
        InputSpec("array", (6,), pixels=True)


def _png(path, size=(8, 8), value=0, mode="L"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_an_image_folder_with_train_and_test_folders(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for c, value in (("cat", 10), ("dog", 200), ("owl", 90)):
            for i in range(n):
                _png(tmp_path / "pets" / split / c / f"{i}.png", value=value)
    stream = file_stream(f"images:{tmp_path / 'pets'}", Cut(classes_per_task=1))
    assert [t.name for t in stream] == ["cat", "dog", "owl"] and [len(t.test) for t in stream] == [2, 2, 2]
    x, _ = _all(stream[1].train)
    assert x.shape == (6, 1, 8, 8) and torch.allclose(x, torch.full_like(x, 200 / 255))
    assert stream.input_spec == InputSpec("image", (1, 8, 8), pixels=True)  # a service takes grey 8x8 pictures


def test_images_of_several_sizes_are_resized_when_asked(tmp_path):
    _png(tmp_path / "a" / "x" / "0.png", (8, 8))
    _png(tmp_path / "a" / "x" / "1.png", (5, 7), mode="RGB")
    _png(tmp_path / "a" / "y" / "0.png", (8, 8))
    _png(tmp_path / "a" / "y" / "1.png", (8, 8))
    with pytest.raises(SpecError, match=r"mixed shapes: .*1\.png is 7x5 RGB but .*0\.png is 8x8 grey; give size="):
        file_stream(f"images:{tmp_path / 'a'}")
    stream = file_stream(f"images:{tmp_path / 'a'},size=4x4,mode=RGB", Cut(classes_per_task=2))
    assert _all(stream[0].train)[0].shape[1:] == (3, 4, 4)
    assert stream.input_spec == InputSpec("image", (3, 4, 4), pixels=True, resize=True)  # served pictures too


def test_a_hugging_face_dataset_saved_to_disk_keeps_its_class_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"f": datasets.Sequence(datasets.Value("float32")), "site": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["low", "high"])})
    data = datasets.Dataset.from_dict({"f": RNG.normal(size=(30, 4)).tolist(), "label": [1, 0] * 15,
                                       "site": ["a"] * 10 + ["b"] * 20}, features=features)
    data.save_to_disk(str(tmp_path / "hf"))
    stream = file_stream(f"hf:{tmp_path / 'hf'},features=f,task=site")
    assert stream.class_names == ["low", "high"] and [t.name for t in stream] == ["a", "b"]
    with pytest.raises(SpecError, match="not in the local cache"):
        file_stream("hf:no-such-user/no-such-dataset-xyz")


def test_large_inputs_spill_to_a_file_read_back_batch_by_batch(tmp_path, monkeypatch):
    path = _csv(tmp_path / "big.csv", n=200)
    spec = parse(f"{path},task=shop")
    in_memory = read_table(spec)
    files._CACHE.clear()
    monkeypatch.setattr(rows, "SPILL_BYTES", 256)
    spilled = read_table(spec)
    assert isinstance(spilled.x, rows.SpilledRows) and isinstance(in_memory.x, torch.Tensor)
    assert np.array_equal(spilled.x.read_all(), in_memory.x.numpy())
    picked = np.array([5, 3, 4, 199, 0, 4])  # unordered, with a run and a repeat
    for _ in range(3):
        assert np.array_equal(spilled.x[picked], in_memory.x.numpy()[picked])
    a, b = cut_table(in_memory, spec, Cut()), cut_table(spilled, spec, Cut())
    assert torch.equal(_all(a[1].test)[0], _all(b[1].test)[0])


def test_built_in_split_streams_take_tasks_and_classes_per_task_as_clinc150_does():
    assert [t.classes for t in build_stream(StreamConfig("split-digits", tasks=3))] == [(0, 1), (2, 3), (4, 5)]
    assert [t.classes for t in build_stream(StreamConfig("split-digits", classes_per_task=3))] == [
        (0, 1, 2), (3, 4, 5), (6, 7, 8)]
    assert len(build_stream(StreamConfig("split-digits", tasks=2, classes_per_task=5))) == 2
    with pytest.raises(ValueError, match="6 task\\(s\\) of 2 classes need 12 classes; there are 10"):
        check(StreamConfig("split-digits", tasks=6))
    with pytest.raises(ValueError, match="--classes-per-task applies to streams cut by classes"):
        check(StreamConfig("permuted-digits", classes_per_task=2))


# -- bad inputs ---------------------------------------------------------------------------------------------
def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD = {  # case -> (file name, its content, the spec's keys, what the message says)
    "missing column": ("d.csv", "a,label\n1,x\n2,y\n", ",task=shop",
                       "has no column 'shop'; its columns are 'a', 'label'"),
    "not a number": ("d.csv", "a,label\n1,x\nfoo,y\n", ",features=a", "not a number"),
    "missing value": ("d.jsonl", '{"a": 1, "label": "x"}\n{"a": null, "label": "y"}\n', ",features=a",
                      "column 'a', row 2: a missing value where a number belongs"),
    "unknown label type": ("d.jsonl", '{"a": 1, "label": 0.5}\n', ",features=a",
                           "column 'label', row 1: float 0.5; labels are strings or integers"),
    "mixed label types": ("d.jsonl", '{"a": 1, "label": 3}\n{"a": 2, "label": "x"}\n', ",features=a",
                          "labels must be all strings or all integers"),
    "missing label": ("d.csv", "a,label\n1,x\n2,\n", "", "column 'label', row 2: a missing label"),
    "empty task": ("d.csv", "a,label,t\n" + "1,x,p\n2,y,p\n3,x,p\n4,y,q\n", ",task=t",
                   "task 'q' has 1 row(s): too few for a training part, a test part"),
    "mixed shapes": ("d.jsonl", '{"v": [1, 2], "label": "x"}\n{"v": [1, 2, 3], "label": "y"}\n', ",features=v",
                     "column 'v', row 2: mixed shapes: [3] after [2]"),
    "bad timestamp": ("d.csv", "a,label,at\n1,x,2024-01-01\n2,y,yesterday\n", ",time=at",
                      "column 'at', row 2: 'yesterday' is not a timestamp"),
    "bad split": ("d.csv", "a,label,part\n1,x,train\n2,y,later\n", ",split=part", "'later' is not a split"),
    "ragged row": ("d.csv", "a,label\n1,x\n2,y,3\n", "", "d.csv"),
    "not json": ("d.jsonl", '{"a": 1, "label": "x"}\n{oops\n', ",features=a", "line 2 is not JSON"),
    "empty file": ("d.csv", "", "", "is empty"),
    "npz without the array": ("d.npz", None, ",features=pixels", "has no array 'pixels' for the features"),
    "npz of float labels": ("d.npz", lambda p: np.savez(p, x=np.zeros((4, 2)), y=np.full(4, 0.5)), "",
                            "array 'y' holds float64 labels; labels are integers or strings"),
    "npz of objects": ("d.npz", lambda p: np.savez(p, x=np.array([{}] * 4, dtype=object), y=np.arange(4)), "",
                       "array 'x' holds Python objects; save numbers or strings"),
    "not an npz": ("d.npz", "hello", "", "is not an .npz file"),
    "not parquet": ("d.parquet", "hello", "", "is not a readable Parquet file"),
    "images without class folders": ("pics", lambda p: _png(p / "0.png"), "", "has no class folders"),
    "an unreadable image": ("pics", lambda p: (_png(p / "a" / "0.png"), (p / "b").mkdir(),
                                               (p / "b" / "0.png").write_text("not a picture")),
                            "", "0.png is not a readable image"),
    "a class folder without images": ("pics", lambda p: (_png(p / "a" / "0.png"), (p / "b").mkdir(),
                                                         (p / "b" / "notes.txt").write_text("x")),
                                      "", "b holds no images ("),
    "unknown key": ("d.csv", "a,label\n1,x\n", ",colour=blue", "unknown data key(s) colour"),
    "no such file": (None, None, "", "does not exist"),
}


def _bad_spec(tmp_path, case):
    name, content, keys, _ = BAD[case]
    if name is None:
        return str(tmp_path / "nowhere.csv") + keys
    path = tmp_path / name
    if callable(content):  # an .npz or a folder of images
        content(path)
        return ("images:" if path.is_dir() else "") + str(path) + keys
    if name.endswith(".npz") and content is None:
        np.savez(path, x=np.zeros((4, 2)), y=np.arange(4))
        return str(path) + keys
    return _write(tmp_path, name, content) + keys


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_input_gets_one_clear_message(tmp_path, case):
    spec = _bad_spec(tmp_path, case)
    with pytest.raises(SpecError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_stream(spec)
    assert BAD[case][3] in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.parametrize("case", ["missing column", "unknown label type", "empty task", "mixed shapes",
                                  "no such file", "npz of float labels", "an unreadable image", "not parquet"])
def test_bad_data_exits_with_code_2_and_writes_nothing(tmp_path, case, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    spec = _bad_spec(inputs, case)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--data", spec, "--out", str(out / "r.json"), "--report", str(out / "report"), "--log", "csv",
              "--log-dir", str(out / "logs"), "--checkpoint-dir", str(out / "ckpt"), "--save", str(out / "model"),
              "--quiet"])
    assert exit_.value.code == 2
    assert BAD[case][3] in capsys.readouterr().err
    assert not out.exists()


def test_a_run_on_a_csv_from_the_command_line(tmp_path, capsys):
    path = _csv(tmp_path / "sales.csv", n=200)
    assert main(["run", "--data", f"{path},task=shop", "--strategy", "ewc", "--epochs", "10", "--batch-size", "16",
                 "--lr", "0.01", "--hidden", "16", "--json", "--quiet", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "sales.csv" and result["scenario"] == "domain" and len(result["tasks"]) == 2
    assert result["config"]["stream"]["data"] == f"{path},task=shop"
    # the label is the sign of the first feature: 0.90-0.975 over seeds 0-2 of data and run, chance 0.5
    assert result["learning_accuracy"] > 0.75


def test_text_through_the_real_encoder_embeddings_or_token_ids(tmp_path, monkeypatch):
    from lifelong import encoders as text

    if not text.encoder_available():
        pytest.skip("the MiniLM encoder (text extra) is not installed")
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))  # a fresh embedding cache, not the user's
    path = tmp_path / "t.csv"
    rows = "".join(f"order {i} is late,late\nthe box {i} is broken,broken\n" for i in range(5))
    path.write_text("text,label\n" + rows)
    ids = file_stream(f"{path},text=text", Cut(classes_per_task=1), encoder="finetune")
    x, _ = _all(ids[0].train)
    assert ids.input.encoder == "finetune" and x.dtype == torch.long and x.shape[1] == text.MAX_TOKENS
    embedded = file_stream(f"{path},text=text", Cut(classes_per_task=1), encoder="frozen")
    x, _ = _all(embedded[0].train)
    assert embedded.input.encoder == "frozen" and x.shape[1] == 384
    assert torch.allclose(x.norm(dim=1), torch.ones(len(x)), atol=1e-4)  # the encoder's normalised embeddings
