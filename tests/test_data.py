import gzip
import struct

import numpy as np
import pytest
import torch

from lifelong.data import (
    BatchLoader,
    DataError,
    StreamConfig,
    TaskData,
    build_stream,
    permuted,
    rotated,
    split,
)
from lifelong.data.vision import FASHION_MNIST_DIR, load_fashion_mnist, read_idx

FMNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _write_idx(path, magic, dims, payload=None):
    body = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    body += payload if payload is not None else bytes(int(np.prod(dims)))
    with gzip.open(path, "wb") as f:
        f.write(body)


def test_read_idx_accepts_a_well_formed_file(tmp_path):
    _write_idx(tmp_path / "ok.gz", 0x803, [3, 2, 2], bytes(range(12)))
    assert read_idx(tmp_path / "ok.gz", 0x803, 3).shape == (3, 2, 2)


@pytest.mark.parametrize("case", ["magic", "truncated", "not-gzip", "count", "missing"])
def test_corrupt_idx_files_get_a_clear_error(tmp_path, case):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    if case == "magic":
        _write_idx(path, 0x801, [3, 2, 2])
    elif case == "truncated":
        _write_idx(path, 0x803, [3, 2, 2], bytes(7))
    elif case == "not-gzip":
        path.write_bytes(b"this is not gzip")
    elif case == "count":
        _write_idx(path, 0x803, [3, 2, 2])
    with pytest.raises(DataError) as err:
        read_idx(path, 0x803, 60000 if case == "count" else 3)
    message = str(err.value)
    assert str(path) in message and "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_loader_honours_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        load_fashion_mnist()


@pytest.mark.skipif(not (FASHION_MNIST_DIR / FMNIST_FILES[0]).exists(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_loads_with_the_expected_sizes():
    train, test = load_fashion_mnist()
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.x.min() >= 0 and train.x.max() <= 1
    assert torch.bincount(test.y).tolist() == [1000] * 10


def test_split_streams_partition_the_classes(digits):
    stream = split(*digits, num_tasks=5, scenario="class", order="random", seed=3, validation=0.1)
    classes = [c for t in stream for c in t.classes]
    assert sorted(classes) == list(range(10)) and classes != list(range(10))
    for t in stream:
        assert set(t.train.y.tolist()) == set(t.classes) == set(t.test.y.tolist())
        assert len(t.valid) == int((len(t.train) + len(t.valid)) * 0.1)
    again = split(*digits, num_tasks=5, scenario="class", order="random", seed=3, validation=0.1)
    assert [t.classes for t in again] == [t.classes for t in stream]


def test_class_masks_follow_the_scenario(digits):
    task_il = split(*digits, num_tasks=5, scenario="task")
    class_il = split(*digits, num_tasks=5, scenario="class")
    assert task_il.class_mask(0)[3].nonzero().squeeze(1).tolist() == [6, 7]
    assert class_il.class_mask(1)[4].nonzero().squeeze(1).tolist() == [0, 1, 2, 3]
    assert permuted(*digits, num_tasks=2).class_mask(0).all()


def test_permuted_and_rotated_streams_are_deterministic_and_distinct(digits):
    a, b = permuted(*digits, num_tasks=3, seed=1), permuted(*digits, num_tasks=3, seed=1)
    idx = torch.arange(5)
    xa, _ = a[2].train.get_batch(idx)
    assert torch.equal(xa, b[2].train.get_batch(idx)[0])
    assert torch.equal(a[0].train.get_batch(idx)[0], digits[0].x[:5])  # task 0 is the original
    assert not torch.equal(xa, a[1].train.get_batch(idx)[0])
    assert sorted(xa.flatten(1)[0].tolist()) == sorted(digits[0].x[0].flatten().tolist())
    r = rotated(*digits, num_tasks=4)
    assert not torch.equal(r[1].test.get_batch(idx)[0], r[0].test.get_batch(idx)[0])


def test_batch_loader_covers_every_sample_once_across_parts(digits):
    parts = [TaskData(digits[1], 0), TaskData(digits[1], 3)]
    loader = BatchLoader(parts, 50, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = [(int(t), float(x.sum())) for b in loader for x, t in zip(b.x, b.task, strict=True)]
    assert len(seen) == 2 * len(digits[1]) and len(loader) == -(-len(seen) // 50)
    assert {t for t, _ in seen} == {0, 3}


def test_unknown_benchmark_and_scenario_are_errors():
    with pytest.raises(ValueError, match="unknown benchmark"):
        build_stream(StreamConfig("mnist-9000"))
    with pytest.raises(ValueError, match="supports scenario"):
        build_stream(StreamConfig("permuted-digits", scenario="class"))
