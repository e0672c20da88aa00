"""A user's own data as a task stream: `--data SPEC` -> a checked `Table` -> tasks.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rows = ["a,b,label,shop"] + [f"{i % 7},{i % 3},{'yes' if i % 2 else 'no'},{'north' if i < 40 else 'south'}"
    ...                              for i in range(80)]
    >>> _ = (folder / "sales.csv").write_text("\\n".join(rows))
    >>> stream = file_stream(f"csv:{folder / 'sales.csv'},label=label,task=shop")
    >>> [(t.name, len(t.train), len(t.test)) for t in stream], stream.scenario, stream.class_names
    ([('north', 32, 8), ('south', 32, 8)], 'domain', ['no', 'yes'])

Tasks are cut by a task column (one task per value, in order of first appearance), by a timestamp
column (consecutive windows of equal size: data arriving over time), or by groups of classes. Every
run scores on the same test rows whatever its seed: they are drawn per row by a fixed seed (or come
from a split column or a test file). The validation part is held out of the training rows the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import math
import sys
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lifelong.data.arrays import image_table, npz_table
from lifelong.data.readers import CsvSource, Source, open_source
from lifelong.data.rows import RowsDataset
from lifelong.data.spec import DataSpec, SpecError, check_paths, parse
from lifelong.data.table import TEST, TRAIN, VALID, Featurize, Table, TableBuilder
from lifelong.data.task import InputSpec, Task, TaskStream
from lifelong.data.vision import DEFAULT_SPLIT_TASKS, class_groups

DEFAULT_TASKS = DEFAULT_SPLIT_TASKS  # time windows; class groups of C // 5 classes, as the built-in split streams
SPLIT_SEED = 0  # the test and validation rows: the same for every run
_CACHE: OrderedDict[tuple[Any, ...], Table] = OrderedDict()


@dataclass(frozen=True)
class Cut:
    """How a table becomes tasks; the same options as the built-in streams take."""

    scenario: str | None = None  # None: task for class groups; task or domain for a column (disjoint classes or not)
    tasks: int | None = None  # a task column: the first N tasks; time: N windows; class groups: the first N groups
    classes_per_task: int | None = None  # class groups only
    class_order: str = "fixed"  # fixed, random (by the seed); `order=` in the spec gives one explicitly
    seed: int = 0
    validation: float = 0.0


# -- reading ---------------------------------------------------------------------------------------------
def featurizer(encoder: str) -> Featurize:
    """Texts -> tensors, built on first use: cached frozen-encoder embeddings, or token ids to fine-tune."""
    state: dict[str, Featurize] = {}

    def featurize(texts: Sequence[str]) -> Tensor:
        if "f" not in state:
            from lifelong import encoders

            try:
                state["f"] = encoders.featurizer(encoder)
            except ValueError as exc:
                raise SpecError(str(exc)) from None
        return state["f"](texts)

    return featurize


def _columns(spec: DataSpec, source: Source) -> tuple[list[str], bool]:
    """The input columns and whether they are text; SpecError naming what is missing."""
    have = source.columns
    used = [c for c in (spec.label_column, spec.task, spec.time, spec.split) if c]
    for c in used + ([spec.text] if spec.text else []):
        if c not in have:
            raise SpecError(f"{source.path} has no column {c!r}; its columns are {', '.join(map(repr, have))}")
    if spec.text:
        return [spec.text], True
    if spec.features:
        out: list[str] = []
        for pattern in spec.features:
            found = [c for c in have if fnmatch.fnmatchcase(c, pattern) and c not in used]
            if not found:
                raise SpecError(f"{source.path} has no column {pattern!r} for features=; its columns are "
                                f"{', '.join(map(repr, have))}")
            out += [c for c in found if c not in out]
        return out, False
    numeric = [c for c in source.numeric() if c not in used]
    if not numeric:
        raise SpecError(f"{source.path} has no numeric columns to learn from besides {', '.join(map(repr, used))}; "
                        "name a text column with text= or the inputs with features=")
    return numeric, False


def read_table(spec: DataSpec, encoder: str = "frozen") -> Table:
    """Every row of the spec's data, checked (cached in this process: a compare reads it once)."""
    check_paths(spec)
    stats = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in spec.local_paths())
    key = (spec, encoder, stats)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    table = _read(spec, featurizer(encoder))
    _give_back_memory()
    _CACHE[key] = table
    while len(_CACHE) > 2:
        _CACHE.popitem(last=False)
    return table


def _give_back_memory() -> None:
    """Return what reading freed to the system: pyarrow's pool and glibc's heap otherwise keep it, and
    the resident memory of a process that read a large file would stay at its peak."""
    if "pyarrow" in sys.modules:
        with contextlib.suppress(AttributeError):
            sys.modules["pyarrow"].default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read(spec: DataSpec, featurize: Featurize) -> Table:
    if spec.format == "images":
        return image_table(spec)
    if spec.format == "npz":
        return npz_table(spec, featurize)
    if spec.split and isinstance(spec.test, str):
        raise SpecError("give split= (a column) or test= (a file), not both")
    source = open_source(spec, spec.path)
    inputs, text = _columns(spec, source)
    tests: list[Source] = []
    if isinstance(spec.test, str):
        tests = [open_source(spec, spec.test)]
    elif spec.format == "hf" and len(spec.splits) == 2:
        tests = [open_source(spec, spec.path, spec.splits[1])]
    columns = list(dict.fromkeys([*inputs, *(c for c in (spec.label_column, spec.task, spec.time, spec.split) if c)]))
    for s in [source, *tests]:
        missing = [c for c in columns if c not in s.columns]
        if missing:
            raise SpecError(f"{s.path} has no column(s) {', '.join(map(repr, missing))}")
        if isinstance(s, CsvSource):
            s.features, s.texts = (set(), set(inputs)) if text else (set(inputs), set())
    builder = TableBuilder(source.path, inputs, spec.label_column, text, featurize, spec.task, spec.time, spec.split,
                           source.label_names(spec.label_column))
    for chunk in source.chunks(columns):
        builder.add(chunk, TRAIN if tests else None)
    for test in tests:
        builder.source = test.path
        for chunk in test.chunks(columns):
            builder.add(chunk, TEST)
    return builder.finish()


# -- cutting ---------------------------------------------------------------------------------------------
def cut_kind(spec: DataSpec) -> str:
    return "column" if spec.task else "time" if spec.time else "classes"


def _ordered(names: list[str], given: tuple[str, ...] | None, order: str, seed: int, what: str) -> list[int]:
    """Indices of `names` in the order the spec gives, shuffled by the seed, or as they are."""
    if given:
        unknown = [g for g in given if g not in names]
        if unknown:
            raise SpecError(f"order= names {what} {', '.join(map(repr, unknown))} that the data does not have; "
                            f"it has {', '.join(map(repr, names[:20]))}{' ...' if len(names) > 20 else ''}")
        if len(set(given)) != len(given):
            raise SpecError(f"order= names a {what} twice")
        return [names.index(g) for g in given]
    if order == "random":
        return torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    if order != "fixed":
        raise SpecError(f"unknown class order {order!r}; use 'fixed' or 'random'")
    return list(range(len(names)))


def _time_name(start: float, end: float, dates: bool) -> str:
    if not dates:
        return f"{start:g} to {end:g}"
    fmt = "%Y-%m-%d %H:%M" if end - start < 3 * 86400 else "%Y-%m-%d"
    return " to ".join(datetime.fromtimestamp(t, timezone.utc).strftime(fmt) for t in (start, end))


def _groups(table: Table, spec: DataSpec, cut: Cut) -> Iterator[tuple[str, np.ndarray]]:
    """(name, rows) of each task, made one at a time (a file of millions of rows holds one task's row
    numbers at a time, besides the tasks' own)."""
    kind = cut_kind(spec)
    if kind != "classes" and cut.classes_per_task is not None:
        raise SpecError(f"--classes-per-task applies to streams cut by classes; this one is cut by its {kind} "
                        f"({spec.task or spec.time!r})")
    if kind == "column":
        assert table.task is not None and table.task_names is not None
        names = table.task_names
        order = _ordered(names, spec.order, cut.class_order, cut.seed, "task")
        if cut.tasks is not None:
            if not 1 <= cut.tasks <= len(order):
                raise SpecError(f"asked for {cut.tasks} tasks; column {spec.task!r} has {len(order)} values")
            order = order[: cut.tasks]
        task = table.task
        return ((names[c], np.flatnonzero(task == c)) for c in order)  # one task's rows at a time
    if kind == "time":
        assert table.time is not None
        if spec.order:
            raise SpecError("order= does not apply to a stream cut by time")
        count = cut.tasks or DEFAULT_TASKS
        if not 1 <= count <= len(table):
            raise SpecError(f"{len(table)} rows do not make {count} time windows")
        time = table.time
        by_time = np.argsort(time, kind="stable")
        return ((_time_name(float(time[w[0]]), float(time[w[-1]]), table.time_is_date), np.sort(w))
                for w in np.array_split(by_time, count))
    classes = _ordered(table.class_names, spec.order, cut.class_order, cut.seed, "class")
    try:  # the same rule as the built-in split streams: C // 5 classes per task unless told, the first N tasks
        natural = max(1, len(classes) // DEFAULT_TASKS)
        count, per = class_groups(len(classes), cut.tasks, cut.classes_per_task or natural)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if count * per < len(classes) and cut.tasks is None:
        left = [table.class_names[c] for c in classes[count * per:]]
        warnings.warn(f"classes {', '.join(left[:10])}{' ...' if len(left) > 10 else ''} are in no task: "
                      f"{len(classes)} classes make {len(classes) // per} tasks of {per}", stacklevel=3)
    groups = [classes[k * per: (k + 1) * per] for k in range(count)]
    return (("/".join(table.class_names[c] for c in g), np.flatnonzero(np.isin(table.y, g))) for g in groups)


def row_keys(rows: np.ndarray, seed: int = SPLIT_SEED) -> np.ndarray:
    """A fixed pseudo-random key per row number (splitmix64): which rows are held out depends on the row
    alone, not on the run's seed nor on how the rows are grouped into tasks, and needs no array per row."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _by_key(rows: np.ndarray) -> np.ndarray:
    return rows[np.argsort(row_keys(rows), kind="stable")]


def _parts(table: Table, rows: np.ndarray, test: float, validation: float,
           name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train, test, valid) rows of one task."""
    if table.split is not None:
        marks = table.split[rows]
        train, held, valid = rows[marks == TRAIN], rows[marks == TEST], rows[marks == VALID]
        if len(valid) == 0 and validation > 0 and len(train) > 1:
            order = _by_key(train)
            n_valid = max(1, int(len(order) * validation))
            train, valid = np.sort(order[:-n_valid]), np.sort(order[-n_valid:])
        if len(train) == 0 or len(held) == 0:
            raise SpecError(f"task {name!r} has {len(train)} training and {len(held)} test rows; it needs both "
                            "(see the split column or the test file)")
        return train, held, (valid if len(valid) else None)
    order = _by_key(rows)
    n_test = max(1, math.floor(len(order) * test + 0.5))
    n_valid = max(1, int((len(order) - n_test) * validation)) if validation > 0 else 0
    if len(order) - n_test - n_valid < 1:
        raise SpecError(f"task {name!r} has {len(order)} row(s): too few for a training part, a test part"
                        f"{' and a validation part' if n_valid else ''}")
    held, rest = order[:n_test], order[n_test:]
    train, valid = rest[: len(rest) - n_valid], rest[len(rest) - n_valid:]
    return np.sort(train), np.sort(held), (np.sort(valid) if n_valid else None)


def cut_table(table: Table, spec: DataSpec, cut: Cut, encoder: str | None = None) -> TaskStream:
    """Tasks from a table. `encoder`: the text encoder the inputs came from (None for arrays)."""
    if cut.validation and not 0 <= cut.validation < 1:
        raise SpecError(f"validation must be a fraction in [0, 1), got {cut.validation}")
    test = spec.test if isinstance(spec.test, float) else 0.2
    small = np.int32 if len(table) < 2**31 else np.int64  # 4 bytes a row where it fits
    parts, class_sets = [], []
    for name, members in _groups(table, spec, cut):
        train, held, valid = (None if r is None else r.astype(small)
                              for r in _parts(table, members, test, cut.validation, name))
        del members
        parts.append((name, train, held, valid))
        class_sets.append(set(np.unique(table.y[train]).tolist()) | set(np.unique(table.y[held]).tolist()))
    disjoint = sum(len(s) for s in class_sets) == len(set().union(*class_sets))
    scenario = cut.scenario or ("task" if cut_kind(spec) == "classes" or disjoint else "domain")
    allowed = ("task", "class") if cut_kind(spec) == "classes" else ("task", "domain", "class")
    if scenario not in allowed:
        raise SpecError(f"a stream cut by classes is task- or class-incremental, not {scenario!r}")
    everything = tuple(range(len(table.class_names)))
    labels = torch.from_numpy(table.y)

    def dataset(r: np.ndarray | None) -> RowsDataset | None:
        return None if r is None else RowsDataset(table.x, labels, torch.from_numpy(r))

    tasks = []
    for k, ((name, train, held, valid), classes) in enumerate(zip(parts, class_sets, strict=True)):
        tasks.append(Task(k, dataset(train), dataset(held),
                          everything if scenario == "domain" else tuple(sorted(classes)), name, dataset(valid)))
    _give_back_memory()  # the tasks' row numbers were made from larger temporary arrays
    return TaskStream(tasks, len(table.class_names), scenario, spec.name, list(table.class_names),
                      _text_input(encoder) if encoder is not None else _array_input(table, spec))


def _text_input(encoder: str) -> InputSpec:
    from lifelong import encoders

    return InputSpec("text", (encoders.FEATURES,) if encoder == "frozen" else (encoders.MAX_TOKENS,), encoder)


def _array_input(table: Table, spec: DataSpec) -> InputSpec | None:
    """Pictures (an image folder, or an .npz of bytes shaped [N, 1 or 3, H, W]) or other arrays of bytes,
    which the model sees divided by 255; None for numbers the model sees as they are (inferred)."""
    x = table.x
    shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else tuple(x.shape)  # SpilledRows: one row's shape
    pixels = x.dtype == torch.uint8 if isinstance(x, Tensor) else np.dtype(x.dtype) == np.uint8
    if spec.format == "images":
        return InputSpec("image", shape, pixels=True, resize=spec.size is not None)
    if not pixels:
        return None
    picture = len(shape) == 3 and shape[0] in (1, 3)
    return InputSpec("image" if picture else "array", shape, pixels=True)


def file_stream(data: str | DataSpec, cut: Cut | None = None, encoder: str = "frozen") -> TaskStream:
    """The stream a `--data` spec describes (parsed here when given as text)."""
    spec = parse(data) if isinstance(data, str) else data
    table = read_table(spec, encoder)
    return cut_table(table, spec, cut or Cut(), encoder if table.text else None)


def check_spec(data: str, scenario: str | None) -> DataSpec:
    """Parse a spec and check what can be checked without reading the data (cheap)."""
    spec = parse(data)
    check_paths(spec)
    if scenario is not None and cut_kind(spec) == "classes" and scenario not in ("task", "class"):
        raise SpecError(f"a stream cut by classes is task- or class-incremental, not {scenario!r}; cut it by a "
                        "column (task=) or by time (time=) for domain-incremental learning")
    return spec


def describe(stream: TaskStream) -> str:
    """One line per task: what a user checks before a long run."""
    lines = [f"{stream.name}: {len(stream)} tasks, {stream.num_classes} classes, {stream.scenario}-incremental"]
    for t in stream:
        lines.append(f"  task {t.id} {t.name!r}: {len(t.train)} train, {len(t.test)} test"
                     f"{f', {len(t.valid)} valid' if t.valid is not None else ''}, {len(t.classes)} classes")
    return "\n".join(lines)
