"""Atomic writes: a reader sees the old file or the new one, never half of one, also after a crash.

Every file lifelong writes for later reading (results, progress, reports, caches, saved models) goes
through here: the data is written to a temporary file in the same folder, flushed and fsynced, then
renamed over the target (a rename within one file system is atomic), and the folder is fsynced so
the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """JSON with one-space indents and a final newline (`default` converts what json cannot)."""
    return write_text(path, json.dumps(obj, indent=1, default=default) + "\n")


def torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return write_atomic(path, lambda f: torch.save(obj, f))


def replace_directory(final: str | os.PathLike, fill: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Build a directory with `fill(tmp)` in a temporary folder beside `final`, fsync everything in it,
    then rename it into place. With `overwrite`, an existing `final` is moved aside first and removed
    after the rename, so a crash leaves one whole copy (the old or the new)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        fill(tmp)
        for item in tmp.iterdir():
            if item.is_file():
                fsync_path(item)
        fsync_path(tmp)
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} already exists")
            old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
