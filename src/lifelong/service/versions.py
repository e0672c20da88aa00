"""Where versions' files live: a local folder (the default), or any fsspec URL (an S3-compatible bucket,
a shared file system) so that replicas and workers on several machines read and write the same versions.

A version is a saved model directory (lifelong.checkpoint). Locally it is written to a temporary
directory and renamed into place. Remotely there is no rename: the files are uploaded with the
manifest (the hashes of every other file) last, and a reader downloads a version into a local cache,
checks every hash and only then renames it into the cache. Either way the database row that makes a
directory a version is committed only after its files are complete, so no process ever serves half
a version.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lifelong.checkpoint import MANIFEST, SavedModel, load_model, save_model, verify


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


class LocalVersions:
    """Versions in a folder of this machine (or a network file system mounted on every machine)."""

    def __init__(self, root: str | os.PathLike, trust_code: bool = False):
        self.root = Path(root)
        self.location = str(self.root)
        self.trust_code = trust_code  # load models whose network a module:function factory builds

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return (self.root / name / MANIFEST).is_file()

    def load(self, name: str) -> SavedModel:
        return load_model(self.root / name, trust_code=self.trust_code)

    def save(self, name: str, *args: Any, **kwargs: Any) -> None:
        """`save_model(root / name, ...)`: a temporary directory renamed into place."""
        save_model(self.root / name, *args, **kwargs)

    def publish(self, name: str, source: Path) -> None:
        """Copy a saved model directory in as `name` (copy to a temporary name, verify, rename)."""
        if self.exists(name):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        shutil.copytree(source, tmp)
        verify(tmp)
        try:
            os.rename(tmp, self.root / name)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)

    def files(self, name: str) -> dict[str, str]:
        """The version's manifest: file name -> sha256."""
        return verify(self.root / name)["files"]

    def read_text(self, name: str, file: str) -> str:
        return (self.root / name / file).read_text(encoding="utf-8")

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)

    def temporary(self) -> list[str]:
        """Names of half-written directories (".NAME.tmp-PID-..."), for the crash recovery to judge."""
        return [p.name for p in self.root.glob(".*.tmp-*")] if self.root.exists() else []


class RemoteVersions:
    """Versions under an fsspec URL, read through a local cache of verified copies."""

    def __init__(self, url: str, cache_dir: str | os.PathLike | None = None, trust_code: bool = False):
        self.trust_code = trust_code
        try:
            import fsspec
        except ImportError as exc:  # fsspec comes with torch; a URL store needs it
            raise ImportError("a version store URL needs fsspec (and its driver: s3fs, ...)") from exc
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.location = url
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        base = Path(cache_dir or os.environ.get("LIFELONG_CACHE") or Path.home() / ".cache" / "lifelong")
        self.cache = base / "versions" / key

    def _remote(self, name: str, file: str = "") -> str:
        return f"{self.root}/{name}" + (f"/{file}" if file else "")

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self._remote(name, MANIFEST)))

    def path(self, name: str) -> Path:
        """A verified local copy of the version (downloaded once into the cache)."""
        local = self.cache / name
        if local.is_dir():
            try:
                verify(local)
                return local
            except Exception:
                shutil.rmtree(local, ignore_errors=True)
        if not self.exists(name):
            raise FileNotFoundError(f"version files {self.location}/{name} are missing (no {MANIFEST})")
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.cache))
        try:
            for remote in self.fs.ls(self._remote(name), detail=False):
                self.fs.get_file(remote, str(tmp / Path(str(remote)).name))
            verify(tmp)  # every hash right: only then is it the version
            with contextlib.suppress(OSError):  # another process of this machine cached it first
                os.rename(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    def load(self, name: str) -> SavedModel:
        return load_model(self.path(name), trust_code=self.trust_code)

    def publish(self, name: str, source: Path) -> None:
        """Upload a saved model directory as `name`: every file, then the manifest last."""
        if self.exists(name):
            return
        self.fs.makedirs(self._remote(name), exist_ok=True)
        files = sorted(p for p in Path(source).iterdir() if p.is_file())
        for p in [f for f in files if f.name != MANIFEST] + [f for f in files if f.name == MANIFEST]:
            self.fs.put_file(str(p), self._remote(name, p.name))

    def save(self, name: str, *args: Any, **kwargs: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="lifelong-version-") as tmp:
            save_model(Path(tmp) / name, *args, **kwargs)
            self.publish(name, Path(tmp) / name)

    def files(self, name: str) -> dict[str, str]:
        return verify(self.path(name))["files"]

    def read_text(self, name: str, file: str) -> str:
        return str(self.fs.cat_file(self._remote(name, file)).decode("utf-8"))

    def remove(self, name: str) -> None:
        if self.fs.exists(self._remote(name)):
            self.fs.rm(self._remote(name), recursive=True)
        shutil.rmtree(self.cache / name, ignore_errors=True)

    def temporary(self) -> list[str]:
        return []  # uploads have no temporary names: an upload without its manifest is no version


VersionStore = LocalVersions | RemoteVersions


def open_versions(location: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                  trust_code: bool = False) -> VersionStore:
    """A local folder, or an fsspec URL (s3://bucket/versions, file:///shared/versions, ...). `trust_code`:
    load models whose network is built by a module:function factory (lifelong.checkpoint.load_model)."""
    if is_url(location):
        return RemoteVersions(str(location), cache_dir, trust_code)
    return LocalVersions(location, trust_code)
