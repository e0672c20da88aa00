"""Data sets by name: where each is looked for, and how `lifelong data fetch NAME` gets and verifies it.

One data folder: $LIFELONG_DATA, else ~/.local/share/lifelong ($XDG_DATA_HOME/lifelong); each data set
in its own subfolder (``fashion-mnist/``, ``clinc150/``). The loaders look there first and keep their
older places as fallbacks: Debian's /usr/share/datasets/fashion-mnist, $LIFELONG_CLINC150, and
shared/datasets/clinc150 beside the repository.

`fetch` downloads each file to a temporary name, checks its published checksum (the MD5s Zalando
publishes for Fashion-MNIST; the SHA-256 of CLINC150's files as the oos-eval repository serves them),
and only then renames it into place: a failed or interrupted download leaves nothing behind. Without a
network it says exactly which URLs to download and where to put the files.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "LIFELONG_DATA"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    urls: tuple[str, ...]  # tried in turn
    algorithm: str  # md5 or sha256
    digest: str
    size: int  # bytes, for the message


@dataclass(frozen=True)
class DataSet:
    name: str
    files: tuple[RemoteFile, ...]
    description: str
    license: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_GITHUB = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
_CLINC = "https://raw.githubusercontent.com/clinc/oos-eval/master/data/"
DATASETS = {
    "fashion-mnist": DataSet("fashion-mnist", tuple(
        RemoteFile(name, (_FMNIST + name, _FMNIST_GITHUB + name), "md5", md5, size) for name, md5, size in (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148))),
        "Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images of clothing in 10 classes", "MIT"),
    "clinc150": DataSet("clinc150", (
        RemoteFile("data_full.json", (_CLINC + "data_full.json",), "sha256",
                   "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0", 2495390),
        RemoteFile("domains.json", (_CLINC + "domains.json",), "sha256",
                   "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a", 3818)),
        "CLINC150 (Larson et al. 2019): 23,700 English queries, 150 intents in 10 domains, plus out-of-scope ones",
        "CC BY 3.0 (keep the attribution wherever it is redistributed)"),
}
NAMES = tuple(DATASETS)


class FetchError(RuntimeError):
    """A data set that could not be fetched; the message says what to do instead."""


def data_root() -> Path:
    """The one data folder: $LIFELONG_DATA, else $XDG_DATA_HOME/lifelong (~/.local/share/lifelong)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "lifelong"


def folder(name: str) -> Path:
    """Where `lifelong data fetch NAME` puts a data set, and where the loaders look first."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    return data_root() / name


def digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: Path, remote: RemoteFile) -> bool:
    return path.is_file() and digest(path, remote.algorithm) == remote.digest


def instructions(name: str, target: Path | None = None) -> str:
    """What to download by hand, and where to put it."""
    data = DATASETS[name]
    default = folder(name)
    target = target or default
    lines = [f"download these files into {target}/ (mkdir -p {target}):"]
    for f in data.files:
        lines.append(f"  {f.urls[0]}  ({f.size:,} bytes, {f.algorithm} {f.digest})")
    again = f"lifelong data fetch {name}" + ("" if target == default else f" --dir {target}")
    lines.append(f"then `{again}` checks them without downloading anything")
    return "\n".join(lines)


def _download(url: str, target: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as reply, open(target, "wb") as out:
        shutil.copyfileobj(reply, out, 2**20)


def fetch(name: str, target: Path | None = None, timeout: float = 30.0,
          say: Callable[[str], None] = lambda _: None) -> Path:
    """Download the files of data set `name` into `target` (default: `folder(name)`), each verified
    before it is renamed into place; files already there and verified are kept. Returns the folder.
    Raises FetchError (unreachable, or a checksum that does not match) with what to do instead."""
    data = DATASETS[name]
    target = Path(target or folder(name))
    made = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        _fetch_files(data, target, timeout, say)
    except FetchError:
        if made and not any(target.iterdir()):
            target.rmdir()  # a failed fetch leaves nothing behind
        raise
    return target


def _fetch_files(data: DataSet, target: Path, timeout: float, say: Callable[[str], None]) -> None:
    for remote in data.files:
        path = target / remote.name
        if verified(path, remote):
            say(f"{path}: present, {remote.algorithm} verified")
            continue
        if path.exists():
            raise FetchError(f"{path} exists but its {remote.algorithm} is {digest(path, remote.algorithm)}, not "
                             f"{remote.digest}: it is corrupt or another version; delete it and fetch again")
        errors = []
        for url in remote.urls:
            tmp = target / f".{remote.name}.{secrets.token_hex(4)}.part"
            try:
                say(f"downloading {url}")
                _download(url, tmp, timeout)
                got = digest(tmp, remote.algorithm)
                if got != remote.digest:
                    errors.append(f"{url}: {remote.algorithm} {got}, expected {remote.digest}")
                    continue
                os.replace(tmp, path)
                say(f"{path}: {remote.algorithm} verified")
                break
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise FetchError(f"could not fetch {remote.name} ({'; '.join(errors)}).\n{instructions(data.name, target)}")


def status(name: str) -> tuple[Path | None, str]:
    """(the folder the loaders would read, how it was found) or (None, why not)."""
    if name == "fashion-mnist":
        from lifelong.data.vision import fashion_mnist_dir

        found = fashion_mnist_dir()
        ok = all((found / f.name).is_file() for f in DATASETS[name].files)
        return (found, "found") if ok else (None, f"missing (looked in {found})")
    from lifelong.data.text import clinc150_dir
    from lifelong.data.vision import DataError

    try:
        return clinc150_dir(), "found"
    except DataError as exc:
        return None, f"missing ({str(exc).split('.')[0]})"
