"""Tabular sources read a chunk at a time: CSV, JSON Lines, Parquet and Hugging Face datasets.

Each source knows its columns before reading any row (so a missing column is reported at once) and
yields chunks, dicts of equally long columns holding only the columns asked for. Nothing reads a
whole file: CSV goes through pyarrow's streaming reader when pyarrow is installed (else Python's csv
module, slower), JSON Lines line by line, Parquet by row group batches, and a Hugging Face dataset
through its own memory-mapped Arrow files.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from lifelong.data.spec import DataSpec, SpecError
from lifelong.data.table import Categorical

CHUNK_ROWS = 16_384
CSV_BLOCK_BYTES = 2**19  # pyarrow reads ahead a few dozen blocks: 512 KiB blocks keep that near 20 MiB
_SNIFF_ROWS = 200  # rows looked at to find the numeric columns (the default features)


def _numeric(values: list[Any]) -> bool:
    if not values:
        return False
    for v in values:
        if isinstance(v, bool):
            return False
        if isinstance(v, (int, float)):
            continue
        if isinstance(v, (list, tuple)):
            return _numeric(list(v)) if v else False
        try:
            float(v)
        except (TypeError, ValueError):
            return False
    return True


class Source:
    """A table's columns and its rows, chunk by chunk."""

    def __init__(self, path: str, columns: list[str]):
        self.path, self.columns = path, columns

    def numeric(self) -> list[str]:
        """Columns whose values are numbers (or vectors of numbers), judged on the first rows."""
        sample = self._sample()
        return [c for c in self.columns if _numeric([row.get(c) for row in sample])]

    def _sample(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in self.chunks(self.columns):
            n = len(next(iter(chunk.values()))) if chunk else 0
            for i in range(min(n, _SNIFF_ROWS - len(rows))):
                rows.append({c: _item(chunk[c], i) for c in chunk})
            if len(rows) >= _SNIFF_ROWS:
                break
        return rows

    def chunks(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def label_names(self, column: str) -> list[str] | None:
        """Class names when the data set stores labels as integers with names (Hugging Face ClassLabel)."""
        return None


def _item(values: Any, i: int) -> Any:
    v = values[i]
    return v.tolist() if isinstance(v, np.ndarray) else v


# -- CSV -----------------------------------------------------------------------------------------------
class CsvSource(Source):
    def __init__(self, path: str, sep: str = ","):
        self.sep = sep
        try:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f, delimiter=sep), None)
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not header or not any(h.strip() for h in header):
            raise SpecError(f"{path} is empty: a CSV file starts with a header row naming its columns")
        columns = [h.strip() for h in header]
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise SpecError(f"{path}: the header names column(s) {', '.join(map(repr, dupes))} more than once")
        super().__init__(path, columns)
        self.features: set[str] = set()  # columns read as float32 by pyarrow (set by the caller)
        self.texts: set[str] = set()  # text columns: handed over as lists of strings

    def _sample(self) -> list[dict[str, Any]]:
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=self.sep, fieldnames=self.columns)
            next(reader, None)
            return list(islice(reader, _SNIFF_ROWS))

    def chunks(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            yield from self._chunks_csv_module(columns)
            return
        yield from self._chunks_pyarrow(columns)

    def _chunks_pyarrow(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {c: pa.float32() if c in self.features else pa.string() for c in columns}
        # a native file, so pyarrow's read-ahead threads never need Python (a Python file object can abort the
        # interpreter at exit when a read fails); small blocks, since it reads a few dozen blocks ahead
        with pa.OSFile(self.path) as f:
            reader = None
            try:
                reader = pacsv.open_csv(
                    f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, column_names=self.columns,
                                                      skip_rows=1, use_threads=False),
                    parse_options=pacsv.ParseOptions(delimiter=self.sep, newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types,
                                                         strings_can_be_null=False, quoted_strings_can_be_null=False))
                for batch in reader:
                    yield {name: self._column(name, col, len(batch))
                           for name, col in zip(batch.schema.names, batch.columns, strict=True)}
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise SpecError(f"{self.path}: {_arrow_message(exc, self.columns)}") from None
            finally:  # stop its read-ahead before the file closes (else a reader thread reads a closed file)
                if reader is not None:
                    reader.close()

    def _column(self, name: str, col: Any, n: int) -> Any:
        if name in self.features:
            return col.to_numpy(zero_copy_only=False)
        if n > 64 and name not in self.texts:  # labels and task keys: few distinct values, encoded once each
            encoded = col.dictionary_encode()
            return Categorical(encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False))
        return col.to_pylist()

    def _chunks_csv_module(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        where = [self.columns.index(c) for c in columns]
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=self.sep)
            next(reader, None)
            line = 1
            while True:
                rows = list(islice(reader, CHUNK_ROWS))
                if not rows:
                    return
                for row in rows:
                    line += 1
                    if len(row) != len(self.columns):
                        raise SpecError(f"{self.path}: row {line - 1} has {len(row)} fields; the header has "
                                        f"{len(self.columns)}")
                yield {c: [row[i] for row in rows] for c, i in zip(columns, where, strict=True)}


def _arrow_message(exc: Exception, columns: list[str]) -> str:
    """pyarrow's message in this module's words: the column by name, the row counted without the header."""
    text = str(exc).strip().splitlines()[0]
    found = re.match(r"In CSV column #(\d+): Row #(\d+): CSV conversion error to float: invalid value (.*)", text)
    if found and int(found[1]) < len(columns):
        return f"column {columns[int(found[1])]!r}, row {int(found[2]) - 1}: {found[3]} is not a number"
    return text


# -- JSON Lines ----------------------------------------------------------------------------------------
class JsonlSource(Source):
    def __init__(self, path: str):
        first = None
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    first = _json_object(line, path, number)
                    break
        if first is None:
            raise SpecError(f"{path} is empty: JSON Lines hold one JSON object per line")
        super().__init__(path, list(first))

    def chunks(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        with open(self.path, encoding="utf-8") as f:
            out: dict[str, list[Any]] = {c: [] for c in columns}
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = _json_object(line, self.path, number)
                for c in columns:
                    if c not in row:
                        raise SpecError(f"{self.path}: line {number} has no {c!r} (it has {', '.join(map(repr, row))})")
                    out[c].append(row[c])
                if len(out[columns[0]]) >= CHUNK_ROWS:
                    yield out
                    out = {c: [] for c in columns}
            if out[columns[0]]:
                yield out


def _json_object(line: str, path: str, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise SpecError(f"{path}: line {number} is {type(row).__name__}; each line holds one JSON object")
    return row


# -- Parquet -------------------------------------------------------------------------------------------
class ParquetSource(Source):
    def __init__(self, path: str):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SpecError("reading Parquet needs pyarrow: pip install 'lifelong[data]'") from None
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise SpecError(f"{path} is not a readable Parquet file ({exc})") from None
        super().__init__(path, list(self.file.schema_arrow.names))

    def chunks(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        import pyarrow as pa

        for batch in self.file.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            out: dict[str, Any] = {}
            for name, col in zip(batch.schema.names, batch.columns, strict=True):
                if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
                    out[name] = col.to_numpy(zero_copy_only=False) if col.null_count == 0 else col.to_pylist()
                else:
                    out[name] = col.to_pylist()
            yield out


# -- Hugging Face datasets -------------------------------------------------------------------------------
class HfSource(Source):
    """A Hugging Face dataset: a folder written by `save_to_disk`, or a name in the local cache (read
    offline: nothing is downloaded)."""

    def __init__(self, name: str, config: str | None, split: str):
        try:
            import datasets
        except ImportError:
            raise SpecError("hf: needs the datasets package: pip install datasets (then the data set must be in "
                            "its local cache, or saved with save_to_disk)") from None
        self.data = _hf_load(datasets, name, config, split)
        super().__init__(name, list(self.data.column_names))

    def chunks(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        yield from self.data.select_columns(columns).iter(batch_size=CHUNK_ROWS)

    def label_names(self, column: str) -> list[str] | None:
        feature = self.data.features.get(column)
        names = getattr(feature, "names", None)
        return list(names) if names else None


def _hf_load(datasets: Any, name: str, config: str | None, split: str) -> Any:
    if Path(name).exists():
        try:
            loaded = datasets.load_from_disk(name)
        except Exception as exc:
            raise SpecError(f"{name} is not a data set saved with save_to_disk ({exc})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise SpecError(f"{name} has splits {', '.join(loaded)}, not {split!r}; say splits=TRAIN[+TEST]")
            return loaded[split]
        return loaded
    # offline: the cache or nothing (a run must not depend on, or wait for, the network)
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # DatasetNotFoundError, ConnectionError, ValueError (unknown split), ...
        cache = datasets.config.HF_DATASETS_CACHE
        raise SpecError(f"Hugging Face data set {name!r}{f' ({config})' if config else ''}, split {split!r}, is not "
                        f"in the local cache {cache} ({type(exc).__name__}: {str(exc)[:200]}). On a machine with "
                        f"network run: python -c \"import datasets; datasets.load_dataset({name!r}"
                        f"{f', {config!r}' if config else ''})\" and copy the cache here, or save it with "
                        "save_to_disk and give hf:FOLDER") from None


def open_source(spec: DataSpec, path: str, split: str | None = None) -> Source:
    """The source of one file (or Hugging Face split) of a spec."""
    if spec.format == "csv":
        sep = "\t" if spec.sep == "," and path.endswith(".tsv") else spec.sep
        return CsvSource(path, sep)
    if spec.format == "jsonl":
        return JsonlSource(path)
    if spec.format == "parquet":
        return ParquetSource(path)
    if spec.format == "hf":
        return HfSource(path, spec.config, split or spec.splits[0])
    raise ValueError(f"{spec.format} is not a tabular format")
