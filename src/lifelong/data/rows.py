"""Inputs row by row, in memory or, past a size, in an unlinked temporary file read back batch by batch.

`RowBuffer` gathers a table's inputs chunk by chunk; beyond `SPILL_BYTES` they go to a temporary file
($LIFELONG_SPILL_DIR, else the system's temporary folder) with no name, so nothing is left behind.
`SpilledRows` reads the rows a batch needs with positioned reads: the kernel's page cache keeps what
is hot, the process's resident memory stays bounded however large the file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from lifelong.data.spec import SpecError

SPILL_BYTES = 64 * 2**20  # inputs above this go to a temporary file


class SpilledRows:
    """Rows in an unlinked temporary file, read with one positioned read (`os.pread`) each: indexing with
    an array of row numbers returns those rows as a new array. (A memory map would be simpler, but a
    random row faults in a whole run of pages around it, up to a large folio: the resident memory of a
    shuffled pass over a mapped file grows to the file's size.)"""

    def __init__(self, file: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], rows: int):
        self.file, self.dtype, self.shape, self.rows = file, dtype, tuple(shape), rows
        self.row_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: Any) -> np.ndarray:
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(idx) and (int(idx.min()) < -self.rows or int(idx.max()) >= self.rows):
            raise IndexError(f"row index out of range for {self.rows} rows")
        fd, size = self.file.fileno(), self.row_bytes
        data = b"".join([os.pread(fd, size, (r % self.rows) * size) for r in idx.tolist()])
        return np.frombuffer(data, dtype=self.dtype).reshape(len(idx), *self.shape).copy()

    def read_all(self) -> np.ndarray:
        return self[np.arange(self.rows)]


class RowBuffer:
    """Rows of one shape and dtype appended chunk by chunk; in memory up to `spill_bytes`, then in an
    unlinked temporary file (`SpilledRows`) in $LIFELONG_SPILL_DIR, else the system's temporary folder."""

    def __init__(self, spill_bytes: int | None = None, spill_dir: str | None = None):
        self.spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
        self.spill_dir = spill_dir or os.environ.get("LIFELONG_SPILL_DIR") or None
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        self.chunks: list[np.ndarray] = []
        self.rows = 0
        self.file: BinaryIO | None = None

    def append(self, rows: np.ndarray, where: str) -> None:
        if self.shape is None:
            self.shape, self.dtype = rows.shape[1:], rows.dtype
        elif rows.shape[1:] != self.shape:
            raise SpecError(f"{where}: mixed shapes: inputs of shape {list(rows.shape[1:])} after "
                            f"{list(self.shape)}; every row needs the same shape")
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self.rows += len(rows)
        if self.file is None and (self.rows * rows[0:1].nbytes if len(rows) else 0) > self.spill_bytes:
            self.file = tempfile.TemporaryFile(dir=self.spill_dir, prefix="lifelong-rows-")  # noqa: SIM115
            for chunk in self.chunks:
                self.file.write(chunk.tobytes())
            self.chunks = []
        if self.file is not None:
            self.file.write(rows.tobytes())
        else:
            self.chunks.append(rows)

    def finish(self) -> Any:
        """A tensor of every row, or `SpilledRows` when they went to a file."""
        assert self.shape is not None and self.dtype is not None
        if self.file is None:
            rows = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
            return torch.from_numpy(rows if rows.flags.writeable else rows.copy())  # an .npz's memory map is read-only
        self.file.flush()
        return SpilledRows(self.file, self.dtype, self.shape, self.rows)


class RowsDataset(torch.utils.data.Dataset):
    """Some rows of a table, fetched a batch at a time: every row's inputs (a tensor, or `SpilledRows`)
    and labels are shared by the tasks, each holds only its row numbers (4 bytes a row). Byte inputs
    (images) are scaled to [0, 1] floats per batch."""

    def __init__(self, x: Any, labels: Tensor, rows: Tensor):
        """`x`, `labels`: every row's inputs and labels; `rows`: the row numbers of this dataset."""
        self.source, self.labels, self.rows = x, labels, rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def y(self) -> Tensor:
        """This dataset's labels (int64)."""
        return self.labels[self.rows.long()].long()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.get_batch(torch.tensor([i]))
        return x[0], y[0]

    def get_batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        rows = self.rows[idx].long()
        # in memory, or on disk (`SpilledRows`: just these rows are read)
        x = self.source[rows] if isinstance(self.source, Tensor) else torch.from_numpy(self.source[rows.numpy()])
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return x, self.labels[rows].long()

    def subset(self, idx: Tensor) -> RowsDataset:
        return RowsDataset(self.source, self.labels, self.rows[idx])

    def split(self, n_last: int) -> tuple[RowsDataset, RowsDataset]:
        """(all but the last `n_last` rows, the last `n_last`), as `ArrayDataset.split`."""
        cut = len(self) - n_last
        return self.subset(torch.arange(cut)), self.subset(torch.arange(cut, len(self)))
