"""Rows of a user's data, gathered chunk by chunk into arrays: inputs, labels, task keys, times, splits.

Readers (readers.py) hand over chunks of columns; `TableBuilder` checks every value as it comes
(one clear message naming the file, the column and the row) and keeps only compact arrays: inputs in
their final dtype, labels and task keys as small integer codes. Inputs beyond `rows.SPILL_BYTES` go
to an unlinked temporary file read back batch by batch, so a file larger than memory becomes a
stream without ever being held whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from torch import Tensor

from lifelong.data.rows import RowBuffer
from lifelong.data.spec import SpecError

TRAIN, VALID, TEST = 0, 1, 2
_SPLIT_NAMES = {"train": TRAIN, "training": TRAIN, "valid": VALID, "validation": VALID, "val": VALID, "dev": VALID,
                "test": TEST, "testing": TEST}
_INT = re.compile(r"^[+-]?\d+$")

Featurize = Callable[[Sequence[str]], Tensor]


@dataclass
class Table:
    """Every row of a data set. `x` is a tensor, or a read-only memory map for large files; `y` holds
    class ids into `class_names` (sorted: numerically when every label is an integer)."""

    x: Any
    y: np.ndarray
    class_names: list[str]
    task: np.ndarray | None = None  # codes into task_names, in order of first appearance
    task_names: list[str] | None = None
    time: np.ndarray | None = None  # seconds (float64)
    time_is_date: bool = False
    split: np.ndarray | None = None  # TRAIN / VALID / TEST per row, when the data says it
    text: bool = False  # the inputs are a text encoder's features (or token ids)

    def __len__(self) -> int:
        return len(self.y)


class Codes:
    """Values -> small integer codes, in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """The codes, in the smallest integer type that holds every code so far (a file of many millions of
        rows keeps one or two bytes a row)."""
        index = self.index
        out = np.empty(len(values), dtype=np.int32)
        for i, v in enumerate(values):
            code = index.get(v)
            if code is None:
                code = index[v] = len(index)
            out[i] = code
        return out.astype(smallest(len(index)))

    @property
    def names(self) -> list[Any]:
        return list(self.index)


@dataclass(frozen=True)
class Categorical:
    """A column given as its distinct values and one code per row (pyarrow's dictionary encoding): checked
    and encoded once per distinct value, not once per row."""

    categories: list[Any]
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def first_rows(self) -> list[int]:
        """The first row holding each category (every category is held by some row)."""
        first = np.zeros(len(self.categories), dtype=np.int64)
        values, index = np.unique(self.codes, return_index=True)
        first[values] = index
        return first.tolist()


def _pyvalues(values: Any) -> list[Any]:
    if isinstance(values, Categorical):
        return [values.categories[c] for c in values.codes.tolist()]
    if isinstance(values, np.ndarray):
        return values.tolist()
    return list(values)


def parse_time(value: Any, where: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 date/time (UTC when it names no zone)."""
    if isinstance(value, bool) or value is None:
        raise SpecError(f"{where}: {value!r} is not a timestamp (a number or an ISO 8601 date)")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SpecError(f"{where}: {value!r} is not a finite timestamp")
        return float(value)
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return stamp.timestamp()
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(f"{where}: {text[:40]!r} is not a timestamp (a number or an ISO 8601 date)") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


class TableBuilder:
    """Checks and gathers chunks of rows. `inputs` names the input columns (with `text` True: one text
    column, turned into tensors by `featurize`); `task`, `time`, `split` the optional columns."""

    def __init__(self, source: str, inputs: Sequence[str], label: str, text: bool = False,
                 featurize: Featurize | None = None, task: str | None = None, time: str | None = None,
                 split: str | None = None, label_names: Sequence[str] | None = None,
                 keep_uint8: bool = False, spill_bytes: int | None = None):
        """`keep_uint8`: inputs stored as bytes stay bytes (images: a quarter of the memory; `RowsDataset`
        scales them to [0, 1] per batch)."""
        if text and featurize is None:
            raise ValueError("text inputs need a featurize function")
        self.source, self.inputs, self.label, self.text = source, list(inputs), label, text
        self.featurize, self.task_col, self.time_col, self.split_col = featurize, task, time, split
        self.label_names = list(label_names) if label_names is not None else None  # int label -> name (HF ClassLabel)
        self.keep_uint8 = keep_uint8
        self.x = RowBuffer(spill_bytes)
        self.labels, self.tasks = Codes(), Codes()
        self.y_parts: list[np.ndarray] = []
        self.task_parts: list[np.ndarray] = []
        self.time_parts: list[np.ndarray] = []
        self.split_parts: list[np.ndarray] = []
        self.label_kind: tuple[str, int, Any] | None = None  # (kind, row, value) of the first label
        self.dates = False
        self.rows = 0

    def where(self, column: str, row: int) -> str:
        return f"{self.source}: column {column!r}, row {row + 1}"

    # -- one chunk -----------------------------------------------------------------------------------
    def add(self, chunk: dict[str, Any], split: int | None = None) -> None:
        """Add rows (a dict of equally long columns); `split` marks them all (a separate test file)."""
        n = len(chunk[self.label])
        if n == 0:
            return
        self.x.append(self._inputs(chunk, n), f"{self.source}, rows {self.rows + 1}-{self.rows + n}")
        labels = chunk[self.label]
        if isinstance(labels, Categorical):
            self.y_parts.append(self._labels(labels.categories, labels.first_rows())[labels.codes])
        else:
            self.y_parts.append(self._labels(_pyvalues(labels)))
        if self.task_col is not None:
            keys = chunk[self.task_col]
            if isinstance(keys, Categorical):
                codes = self.tasks.encode(self._keys(keys.categories, self.task_col, keys.first_rows()))
                self.task_parts.append(codes[keys.codes])
            else:
                self.task_parts.append(self.tasks.encode(self._keys(_pyvalues(keys), self.task_col)))
        if self.time_col is not None:
            self.time_parts.append(self._times(_pyvalues(chunk[self.time_col])))
        if split is not None:
            self.split_parts.append(np.full(n, split, dtype=np.int8))
        elif self.split_col is not None:
            self.split_parts.append(self._splits(_pyvalues(chunk[self.split_col])))
        self.rows += n

    def _inputs(self, chunk: dict[str, Any], n: int) -> np.ndarray:
        if self.text:
            texts = _pyvalues(chunk[self.inputs[0]])
            for i, t in enumerate(texts):
                if not isinstance(t, str) or not t.strip():
                    what = "an empty text" if isinstance(t, str) or t is None else f"{type(t).__name__} {t!r:.40}"
                    raise SpecError(f"{self.where(self.inputs[0], self.rows + i)}: {what}; every row needs a text")
            assert self.featurize is not None
            return self.featurize(texts).numpy()
        if len(self.inputs) == 1 and self._is_vectors(chunk[self.inputs[0]]):
            return self._vectors(chunk[self.inputs[0]], self.inputs[0])
        columns = [self._numbers(chunk[c], c) for c in self.inputs]
        return np.stack(columns, axis=1) if columns else np.zeros((n, 0), np.float32)

    @staticmethod
    def _is_vectors(values: Any) -> bool:
        if isinstance(values, np.ndarray):
            return values.ndim > 1 or values.dtype == object
        return len(values) > 0 and isinstance(values[0], (list, tuple, np.ndarray))

    def _vectors(self, values: Any, column: str) -> np.ndarray:
        """A column holding one vector (or nested list) per row."""
        if isinstance(values, np.ndarray) and values.dtype != object:
            array = values
        else:
            rows = [np.asarray(v) for v in values]
            shapes = {r.shape for r in rows}
            if len(shapes) > 1:
                first = rows[0].shape
                i = next(i for i, r in enumerate(rows) if r.shape != first)
                raise SpecError(f"{self.where(column, self.rows + i)}: mixed shapes: {list(rows[i].shape)} after "
                                f"{list(first)}; every row needs the same shape")
            try:
                array = np.stack(rows)
            except ValueError as exc:
                raise SpecError(f"{self.source}: column {column!r}: {exc}") from None
        if array.dtype.kind not in "fiub":
            raise SpecError(f"{self.source}: column {column!r} holds {array.dtype} values, not numbers")
        if self.keep_uint8 and array.dtype == np.uint8:
            return array
        return self._finite(array.astype(np.float32), column)

    def _numbers(self, values: Any, column: str) -> np.ndarray:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            return self._finite(values.astype(np.float32), column)
        out = np.empty(len(values), dtype=np.float32)
        for i, v in enumerate(_pyvalues(values)):
            if isinstance(v, bool) or v is None or v == "":
                raise SpecError(f"{self.where(column, self.rows + i)}: "
                                f"{'a missing value' if v in (None, '') else repr(v)} where a number belongs")
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                raise SpecError(f"{self.where(column, self.rows + i)}: {str(v)[:40]!r} is not a number") from None
        return self._finite(out, column)

    def _finite(self, array: np.ndarray, column: str) -> np.ndarray:
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if bad.any():
            i = int(bad.argmax())
            raise SpecError(f"{self.where(column, self.rows + i)}: a missing or non-finite value where a number "
                            "belongs")
        return array

    def _labels(self, values: list[Any], rows: list[int] | None = None) -> np.ndarray:
        """Codes of the labels. `rows`: the chunk row of each value, when the values are a column's distinct
        values (`Categorical`), for the messages."""
        for pos, v in enumerate(values):
            row = self.rows + (rows[pos] if rows is not None else pos)
            if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
                what = "a missing label" if v is None or v == "" else f"{type(v).__name__} {v!r:.40}"
                raise SpecError(f"{self.where(self.label, row)}: {what}; labels are strings or integers")
            kind = "str" if isinstance(v, str) else "int"
            if self.label_kind is None:
                self.label_kind = (kind, row, v)
            elif kind != self.label_kind[0]:
                first = self.label_kind
                raise SpecError(f"{self.where(self.label, row)}: label {v!r} is "
                                f"{'an integer' if kind == 'int' else 'a string'} but row {first[1] + 1} has "
                                f"{first[2]!r}; labels must be all strings or all integers")
            if self.label_names is not None and not (isinstance(v, int) and 0 <= v < len(self.label_names)):
                raise SpecError(f"{self.where(self.label, row)}: label {v!r} is not one of the data set's "
                                f"{len(self.label_names)} named classes")
        if self.label_names is not None:  # integer labels that index the data set's class names
            values = [self.label_names[v] for v in values]
        return self.labels.encode(values)

    def _keys(self, values: list[Any], column: str, rows: list[int] | None = None) -> list[str]:
        out = []
        for pos, v in enumerate(values):
            if v is None or isinstance(v, (bool, float, list, dict)) or (isinstance(v, str) and not v.strip()):
                row = self.rows + (rows[pos] if rows is not None else pos)
                what = "a missing value" if v is None or v == "" else f"{type(v).__name__} {v!r:.40}"
                raise SpecError(f"{self.where(column, row)}: {what}; a task key is a string or an integer")
            out.append(str(v))
        return out

    def _times(self, values: list[Any]) -> np.ndarray:
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            assert self.time_col is not None
            out[i] = parse_time(v, self.where(self.time_col, self.rows + i))
            if isinstance(v, (str, datetime)) and not _is_number(v):
                self.dates = True
        return out

    def _splits(self, values: list[Any]) -> np.ndarray:
        out = np.empty(len(values), dtype=np.int8)
        for i, v in enumerate(values):
            code = _SPLIT_NAMES.get(str(v).strip().lower()) if v is not None else None
            if code is None:
                assert self.split_col is not None
                raise SpecError(f"{self.where(self.split_col, self.rows + i)}: {v!r} is not a split; use train, "
                                "valid or test")
            out[i] = code
        return out

    # -- the whole table -------------------------------------------------------------------------------
    def finish(self) -> Table:
        if self.rows == 0:
            raise SpecError(f"{self.source}: no rows")
        names = self.labels.names
        if self.label_names is not None:  # a named label space keeps the data set's own order
            order = sorted(range(len(names)), key=lambda c: self.label_names.index(names[c]))  # type: ignore[union-attr]
        elif all(isinstance(n, int) or _INT.match(n) for n in names):
            order = sorted(range(len(names)), key=lambda c: int(names[c]))
        else:
            order = sorted(range(len(names)), key=lambda c: str(names[c]))
        # int16 (torch has no unsigned 16-bit indexing): 2 bytes a row for files of many millions of rows
        kind = np.int16 if len(names) < 2**15 else np.int32
        remap = np.empty(len(names), dtype=kind)
        remap[np.array(order, dtype=np.int64)] = np.arange(len(names), dtype=kind)
        y = remap[np.concatenate(self.y_parts)]
        return Table(self.x.finish(), y, [str(names[c]) for c in order],
                     np.concatenate(self.task_parts) if self.task_parts else None,
                     [str(n) for n in self.tasks.names] if self.task_col else None,
                     np.concatenate(self.time_parts) if self.time_parts else None, self.dates,
                     np.concatenate(self.split_parts) if self.split_parts else None, self.text)


def smallest(count: int) -> type:
    """The smallest unsigned integer type for codes 0..count-1."""
    return np.uint8 if count <= 2**8 else np.uint16 if count <= 2**16 else np.int32


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True

