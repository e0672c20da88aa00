"""Offline text for language modelling: sources on this machine, each a list of documents.

- ``python-code``: the installed CPython's standard library, its ``.py`` files;
- ``python-docs``: Debian's python3.11-doc, the reStructuredText sources of the HTML manual
  (``/usr/share/doc/python3.11/html/_sources``);
- ``wordnet``: WordNet 3.0 glosses from Debian's wordnet-base, one "lemma (part of speech): gloss" line
  per synset;
- ``clinc150``: the CLINC150 user queries (in-scope, every split), read through
  `lifelong.data.text.load_clinc150`'s path options;
- ``debian-docs``: packaged documentation under /usr/share/doc (changelogs, copyright notices,
  READMEs; the first 8 KB of each file, identical files once), the general text of the mixture.

`scripts/ensure-text-data.sh` installs the Debian packages. On a machine without them (a GPU host,
say), `save_snapshot` writes each corpus to one compressed file and ``LIFELONG_CORPORA=<folder>`` makes
`load_corpus` read it from there (its digest checked). A document goes to one split only
(general, general-valid, general-test, train, valid, test), chosen by a hash of its name, so no text
is in two splits whatever the order files are listed in. Every source is read in sorted order and
capped in bytes, so a corpus is the same on every machine with the same packages; `Corpus.digest`
says whether it is.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lifelong.atomic import write_bytes
from lifelong.data.vision import DataError

SPLITS = ("general", "general-valid", "general-test", "train", "valid", "test")
# Shares of documents per split: a fifth of every source is kept apart for the general mixture
# (pre-training, with its own held-out parts), the rest is the source's own domain.
SHARES = {"general": 0.16, "general-valid": 0.02, "general-test": 0.02, "train": 0.6, "valid": 0.1, "test": 0.1}
DOC_BYTES = 8192  # longest piece of one documentation file kept (changelogs run to megabytes)
_SETUP = "run scripts/ensure-text-data.sh (apt-get install python3.11-doc wordnet-base)"

Document = tuple[str, str]  # (name, text)


def _split_of(name: str) -> str:
    """The split a document belongs to, from a hash of its name (stable across machines)."""
    u = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") / 2**64
    edge = 0.0
    for split in SPLITS:
        edge += SHARES[split]
        if u < edge:
            return split
    return SPLITS[-1]


def python_code() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        if skip.isdisjoint(path.relative_to(root).parts):
            yield str(path.relative_to(root)), path.read_text(encoding="utf-8", errors="replace")


def python_docs() -> Iterator[Document]:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    roots = [Path(f"/usr/share/doc/python{version}/html/_sources"), Path("/usr/share/doc/python3.11/html/_sources"),
             Path("/usr/share/doc/python3-doc/html/_sources")]
    root = next((r for r in roots if r.is_dir()), None)
    if root is None:
        raise DataError(f"the Python documentation is not installed (looked in {roots[0]}); {_SETUP}")
    for path in sorted(root.rglob("*.txt")):
        yield str(path.relative_to(root)), path.read_text(encoding="utf-8", errors="replace")


WORDNET_POS = {"noun": "n", "verb": "v", "adj": "adj", "adv": "adv"}


def wordnet() -> Iterator[Document]:
    root = Path(os.environ.get("LIFELONG_WORDNET", "/usr/share/wordnet"))
    if not (root / "data.noun").exists():
        raise DataError(f"WordNet is not installed ({root}/data.noun missing); {_SETUP}")
    for kind, short in WORDNET_POS.items():
        with open(root / f"data.{kind}", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue  # the licence header
                head, gloss = line.split("|", 1)
                fields = head.split()
                lemma = fields[4].replace("_", " ")
                yield f"{kind}:{fields[0]}", f"{lemma} ({short}): {gloss.strip()}"


def clinc150(path: str | os.PathLike | None = None) -> Iterator[Document]:
    from lifelong.data.text import load_clinc150

    data = load_clinc150(path)
    for split in ("train", "val", "test"):
        for i, (text, _) in enumerate(data.splits[split]):
            yield f"{split}:{i}", text


def debian_docs(root: str | os.PathLike = "/usr/share/doc") -> Iterator[Document]:
    seen: set[bytes] = set()
    base = Path(root)
    for package in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("python3.")):
        for path in sorted(package.iterdir()):
            if not path.is_file() or not (path.name == "copyright" or path.name.startswith(("changelog", "README"))):
                continue
            try:
                if path.suffix == ".gz":
                    with gzip.open(path) as fh:
                        raw = fh.read(DOC_BYTES)
                else:
                    raw = path.read_bytes()[:DOC_BYTES]
            except (OSError, EOFError):
                continue
            key = hashlib.blake2b(raw, digest_size=16).digest()
            if key in seen:
                continue
            seen.add(key)
            yield str(path.relative_to(base)), raw.decode("utf-8", errors="replace")


SOURCES: dict[str, Callable[[], Iterator[Document]]] = {
    "python-code": python_code,
    "python-docs": python_docs,
    "wordnet": wordnet,
    "clinc150": clinc150,
    "debian-docs": debian_docs,
}


@dataclass(frozen=True)
class Corpus:
    """One source's text per split, as UTF-8 bytes (documents joined by blank lines)."""

    name: str
    splits: dict[str, Tensor]  # split -> uint8 [bytes]

    @property
    def digest(self) -> str:
        """A short hash of all the text: equal digests, equal corpora."""
        h = hashlib.blake2b(digest_size=8)
        for split in SPLITS:
            h.update(self.splits[split].numpy().tobytes())
        return h.hexdigest()

    def sizes(self) -> dict[str, int]:
        return {k: int(v.numel()) for k, v in self.splits.items()}


SNAPSHOT_ENV = "LIFELONG_CORPORA"


def _snapshot_path(directory: str | os.PathLike, name: str, max_bytes: int) -> Path:
    return Path(directory) / f"{name}-{max_bytes}.pt.gz"


def save_snapshot(directory: str | os.PathLike, names: Iterable[str] = tuple(SOURCES), max_bytes: int = 4_000_000,
                  clinc150_dir: str | os.PathLike | None = None) -> list[Path]:
    """Each corpus read from this machine's sources into `<directory>/<name>-<max_bytes>.pt.gz`."""
    written = []
    for name in names:
        corpus = _read_sources(name, max_bytes, clinc150_dir)
        buffer = io.BytesIO()
        torch.save({"name": name, "max_bytes": max_bytes, "digest": corpus.digest, "splits": corpus.splits}, buffer)
        written.append(write_bytes(_snapshot_path(directory, name, max_bytes), gzip.compress(buffer.getvalue(), 6)))
    return written


def _load_snapshot(path: Path, name: str) -> Corpus:
    try:
        saved = torch.load(io.BytesIO(gzip.decompress(path.read_bytes())), weights_only=True)
        corpus = Corpus(name, {s: saved["splits"][s] for s in SPLITS})
    except (OSError, EOFError, RuntimeError, KeyError, gzip.BadGzipFile) as e:
        raise DataError(f"corpus snapshot {path} cannot be read ({e}); write it again with save_snapshot") from e
    if corpus.digest != saved["digest"]:
        raise DataError(f"corpus snapshot {path} does not match its digest; write it again with save_snapshot")
    return corpus


def load_corpus(name: str, max_bytes: int = 4_000_000, clinc150_dir: str | os.PathLike | None = None) -> Corpus:
    """A source's documents, split by document and capped at `max_bytes` per split (taken in
    sorted document order, so the cap keeps the same documents on every machine); read from the
    snapshot in ``$LIFELONG_CORPORA`` when there is one for this source and cap."""
    if name not in SOURCES:
        raise ValueError(f"unknown text source {name!r}; choose one of {', '.join(SOURCES)}")
    snapshots = os.environ.get(SNAPSHOT_ENV)
    if snapshots and _snapshot_path(snapshots, name, max_bytes).exists():
        return _load_snapshot(_snapshot_path(snapshots, name, max_bytes), name)
    return _read_sources(name, max_bytes, clinc150_dir)


def _read_sources(name: str, max_bytes: int, clinc150_dir: str | os.PathLike | None) -> Corpus:
    documents = clinc150(clinc150_dir) if name == "clinc150" else SOURCES[name]()
    parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    used = dict.fromkeys(SPLITS, 0)
    for doc_name, text in documents:
        split = _split_of(f"{name}/{doc_name}")
        if used[split] >= max_bytes:
            continue
        raw = text.encode("utf-8")[: max_bytes - used[split]]
        sep = b"\n" if name in ("wordnet", "clinc150") else b"\n\n"  # one-line documents
        parts[split].append(raw + sep)
        used[split] += len(raw) + len(sep)
    splits = {s: torch.frombuffer(bytearray(b"".join(p)), dtype=torch.uint8) if p else torch.zeros(0, dtype=torch.uint8)
              for s, p in parts.items()}
    empty = [s for s, t in splits.items() if t.numel() < 1024]
    if empty:
        raise DataError(f"text source {name!r} has (almost) no text in split(s) {empty}; {_SETUP}")
    return Corpus(name, splits)


def decode(tokens: Tensor) -> str:
    """Bytes back to text (invalid UTF-8 shown as U+FFFD)."""
    return bytes(tokens.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


def encode(text: str) -> Tensor:
    """Text as UTF-8 byte tokens (uint8)."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()
