"""Image data: Fashion-MNIST from its IDX files, scikit-learn's digits, and the stream builders
(permuted, split, rotated) that turn one labelled dataset into a `TaskStream`."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.data.task import ArrayDataset, Task, TaskStream

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000)}
_INSTALL_HINT = ("run `lifelong data fetch fashion-mnist` (it downloads into $LIFELONG_DATA/fashion-mnist), "
                 "install Debian's package with `sudo apt-get install dataset-fashion-mnist`, or point "
                 "--data-dir / the LIFELONG_DATA environment variable at a folder holding the four "
                 "Fashion-MNIST *-ubyte.gz files")


class DataError(RuntimeError):
    """Data that is missing or malformed; the message says how to fix it."""


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder to read Fashion-MNIST from: the argument; else the data folder's fashion-mnist/
    ($LIFELONG_DATA/fashion-mnist, or $LIFELONG_DATA itself when it holds the files, as it used to);
    else Debian's /usr/share/datasets/fashion-mnist."""
    from lifelong.data.registry import DATA_ENV, data_root

    if data_dir:
        return Path(data_dir)
    own = data_root() / "fashion-mnist"
    if own.is_dir() or os.environ.get(DATA_ENV):
        return own if own.is_dir() else data_root()
    return FASHION_MNIST_DIR


def read_idx(path: Path, magic: int, count: int | None = None) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes, checking its magic number and its size."""
    if not path.exists():
        raise DataError(f"{path} does not exist: {_INSTALL_HINT}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); it is corrupt: "
                        f"delete it and {_INSTALL_HINT}") from exc
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataError(f"{path}: bad IDX magic number {found} (expected {magic}); the file is corrupt "
                        f"or not Fashion-MNIST: {_INSTALL_HINT}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(raw) != expected or (count is not None and dims[0] != count):
        raise DataError(f"{path}: size mismatch (header says {dims}, {len(raw)} bytes for {expected} "
                        f"expected, {count} samples expected); the file is truncated or corrupt: "
                        f"{_INSTALL_HINT}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) Fashion-MNIST as float images [N, 1, 28, 28] in [0, 1] and labels 0-9."""
    root = fashion_mnist_dir(data_dir)
    out = []
    for split in ("train", "test"):
        images_file, labels_file, n = _IDX_FILES[split]
        images = read_idx(root / images_file, 0x00000803, n)
        labels = read_idx(root / labels_file, 0x00000801, n)
        if labels.max() > 9:
            raise DataError(f"{root / labels_file}: labels outside 0-9; the file is corrupt: {_INSTALL_HINT}")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        out.append(ArrayDataset(x, torch.from_numpy(labels.astype(np.int64))))
    return out[0], out[1]


def load_digits(test_fraction: float = 0.3) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's bundled 8x8 digits (1,797 images), split once by a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return ArrayDataset(x[train], y[train]), ArrayDataset(x[test], y[test])


class Permute:
    """Apply one fixed permutation to the pixels of a batch of images."""

    def __init__(self, perm: Tensor):
        self.perm = perm

    def __call__(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, self.perm].reshape(x.shape)


class Rotate:
    """Rotate a batch of images by a fixed angle (degrees, bilinear, zero fill)."""

    def __init__(self, degrees: float):
        self.degrees = degrees

    def __call__(self, x: Tensor) -> Tensor:
        a = math.radians(self.degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


def _holdout(data: ArrayDataset, validation: float) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Keep the last `validation` share of a task's training samples apart for tuning."""
    if validation <= 0:
        return data, None
    if not 0 < validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
    return data.split(max(1, int(len(data) * validation)))


def _with_transform(data: ArrayDataset, transform) -> ArrayDataset:
    return ArrayDataset(data.x, data.y, transform)


def permuted(train: ArrayDataset, test: ArrayDataset, num_tasks: int, seed: int = 0,
             validation: float = 0.0, name: str = "permuted") -> TaskStream:
    """Domain-incremental: task 0 sees the original images, task k a fixed random pixel permutation."""
    gen = torch.Generator().manual_seed(seed)
    n_pixels = math.prod(train.x.shape[1:])
    tasks = []
    for k in range(num_tasks):
        perm = torch.arange(n_pixels) if k == 0 else torch.randperm(n_pixels, generator=gen)
        fit, valid = _holdout(_with_transform(train, Permute(perm)), validation)
        tasks.append(Task(k, fit, _with_transform(test, Permute(perm)), tuple(range(10)),
                          f"permutation {k}", valid))
    return TaskStream(tasks, 10, "domain", name)


def rotated(train: ArrayDataset, test: ArrayDataset, num_tasks: int, seed: int = 0,
            validation: float = 0.0, max_degrees: float = 180.0, name: str = "rotated") -> TaskStream:
    """Domain-incremental: task k sees the images rotated by k * max_degrees / num_tasks degrees."""
    del seed  # the angles are fixed; kept for a uniform builder signature
    tasks = []
    for k in range(num_tasks):
        rot = Rotate(k * max_degrees / num_tasks)
        fit, valid = _holdout(_with_transform(train, rot), validation)
        tasks.append(Task(k, fit, _with_transform(test, rot), tuple(range(10)),
                          f"rotation {k * max_degrees / num_tasks:.0f} deg", valid))
    return TaskStream(tasks, 10, "domain", name)


def class_order(num_classes: int, order: str, seed: int) -> list[int]:
    """`fixed`: 0, 1, ..., C-1; `random`: a permutation drawn from the seed."""
    if order == "fixed":
        return list(range(num_classes))
    if order == "random":
        return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    raise ValueError(f"unknown class order {order!r}; use 'fixed' or 'random'")


DEFAULT_SPLIT_TASKS = 5  # a split benchmark's natural grouping: C // 5 classes per task (Split MNIST: 5 x 2)


def class_groups(num_classes: int, tasks: int | None = None, per_task: int | None = None) -> tuple[int, int]:
    """(tasks, classes per task) of a stream cut into groups of classes, the two composing the same way
    everywhere: `per_task` classes per task (default: the `tasks` requested split the classes equally,
    else C // 5), and the first `tasks` groups (default: every full group). Classes beyond the groups
    are in no task."""
    if per_task is None:
        per_task = num_classes // tasks if tasks else max(1, num_classes // DEFAULT_SPLIT_TASKS)
    if per_task < 1:
        raise ValueError(f"{num_classes} classes do not make {tasks} tasks of at least one class"
                         if tasks else f"a task needs at least one class, not {per_task}")
    count = tasks if tasks is not None else num_classes // per_task
    if count < 1 or count * per_task > num_classes:
        most = f" (at most {num_classes // per_task} tasks of {per_task})" if num_classes >= per_task else ""
        raise ValueError(f"{count} task(s) of {per_task} classes need {count * per_task} classes; there are "
                         f"{num_classes}{most}")
    return count, per_task


def split(train: ArrayDataset, test: ArrayDataset, num_tasks: int | None = None, scenario: str = "task",
          seed: int = 0, validation: float = 0.0, order: str = "fixed", name: str = "split",
          class_names: list[str] | None = None, classes_per_task: int | None = None) -> TaskStream:
    """Groups of classes learned in turn (task- or class-incremental): `classes_per_task` classes each
    (default: `num_tasks` equal groups), the first `num_tasks` groups (default: all); see `class_groups`."""
    if scenario not in ("task", "class"):
        raise ValueError(f"a split stream is task- or class-incremental, not {scenario!r}")
    num_classes = int(train.y.max()) + 1
    count, per_task = class_groups(num_classes, num_tasks, classes_per_task)
    classes = class_order(num_classes, order, seed)
    tasks = []
    for k in range(count):
        group = tuple(classes[k * per_task: (k + 1) * per_task])
        in_train = torch.isin(train.y, torch.tensor(group)).nonzero().squeeze(1)
        in_test = torch.isin(test.y, torch.tensor(group)).nonzero().squeeze(1)
        fit, valid = _holdout(train.subset(in_train), validation)
        label = "/".join(class_names[c] for c in group) if class_names else "classes " + ",".join(map(str, group))
        tasks.append(Task(k, fit, test.subset(in_test), group, label, valid))
    return TaskStream(tasks, num_classes, scenario, name, class_names)
