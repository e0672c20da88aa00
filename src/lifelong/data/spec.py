"""What `--data SPEC` says: which file, which columns, how to cut it into tasks.

One line on the command line::

    FORMAT:PATH[,KEY=VALUE]...

    csv:tickets.csv,text=body,label=intent,task=product
    jsonl:feedback.jsonl,text=comment,label=label,time=created_at
    parquet:sensors.parquet,features=s*,label=state
    npz:arrays.npz,features=x,label=y
    images:photos/
    hf:ag_news,text=text,label=label

FORMAT may be left out when PATH says it (a .csv, .tsv, .jsonl, .parquet or .npz file, or a folder of
images). Values cannot hold commas; lists join their items with ``+`` (``features=a+b+c``, globs such
as ``features=f*`` allowed; ``order=billing+shipping``). Or the same keys in a TOML file, ``--data
spec.toml``, at its top level or under ``[data]`` (lists as TOML arrays, paths relative to the file).

Keys (every one optional but the path):

- ``text``: a column of text (featurised by the frozen MiniLM encoder, or token ids with
  ``--encoder finetune``); else ``features``: columns of numbers, or one column holding a vector per
  row (default: every numeric column not used otherwise). npz: the array names.
- ``label``: the label column (default ``label``; npz ``y``). Strings or integers.
- how tasks are cut, at most one of: ``task`` (a column: one task per value, in order of first
  appearance), ``time`` (a timestamp column, numbers or ISO 8601: tasks are consecutive windows of
  equal size), or neither (groups of classes: ``--classes-per-task`` and ``--tasks``).
- ``order``: the tasks' (task column) or the classes' (class groups) order, ``+``-joined.
- ``split``: a column saying ``train``, ``valid`` or ``test`` per row; else ``test``: a fraction held
  out of each task (default 0.2, drawn by a fixed seed so every run scores on the same rows) or the
  path of a test file with the same columns.
- csv: ``sep`` (default ``,``; ``tab`` for a tab). images: ``size=HxW`` and ``mode=L|RGB``.
  hf: ``config`` and ``splits`` (``train+test``, the Hugging Face split names).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FORMATS = ("csv", "jsonl", "parquet", "npz", "images", "hf")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
             ".pq": "parquet", ".npz": "npz"}
_ALIASES = {"json": "jsonl", "imagefolder": "images", "image": "images", "huggingface": "hf"}


class SpecError(ValueError):
    """A data spec or a data file that cannot make a stream; the message says what to change.

    A ValueError, so the command line reports it as a usage error (exit code 2) before anything runs."""


@dataclass(frozen=True)
class DataSpec:
    """A parsed `--data` spec. Column names are as in the file."""

    format: str
    path: str
    text: str | None = None
    features: tuple[str, ...] | None = None
    label: str | None = None  # None: "label" ("y" for npz)
    task: str | None = None
    time: str | None = None
    order: tuple[str, ...] | None = None
    split: str | None = None
    test: float | str = 0.2
    sep: str = ","
    size: tuple[int, int] | None = None
    mode: str | None = None
    config: str | None = None
    splits: tuple[str, ...] = ("train",)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SpecError(f"unknown data format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not self.path:
            raise SpecError("the data spec names no file: FORMAT:PATH[,KEY=VALUE]...")
        if self.text and self.features:
            raise SpecError("give text= or features=, not both")
        if self.task and self.time:
            raise SpecError("cut tasks by one of task= or time=, not both")
        if self.format == "images" and (self.text or self.features or self.task or self.time):
            raise SpecError("an image folder takes size=, mode=, order= and test= (its classes are its folders)")
        if isinstance(self.test, float) and not 0 < self.test < 1:
            raise SpecError(f"test= must be a fraction in (0, 1) or a file, not {self.test}")
        if self.mode not in (None, "L", "RGB"):
            raise SpecError(f"mode= is L (grey) or RGB, not {self.mode!r}")
        if self.format == "hf" and not 1 <= len(self.splits) <= 2:
            raise SpecError("splits= names the train split and optionally the test split: splits=train+test")

    @property
    def label_column(self) -> str:
        return self.label or ("y" if self.format == "npz" else "label")

    @property
    def name(self) -> str:
        """A short name for results: the file's name, or the Hugging Face dataset's."""
        return self.path if self.format == "hf" else Path(self.path).name or self.path

    def local_paths(self) -> list[Path]:
        """The files on disk this spec reads (none for a Hugging Face dataset by name)."""
        paths = [] if self.format == "hf" and not Path(self.path).exists() else [Path(self.path)]
        if isinstance(self.test, str):
            paths.append(Path(self.test))
        return paths

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _split_list(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split("+") if v.strip())
    if not items:
        raise SpecError(f"an empty list: {value!r}")
    return items


def _convert(key: str, value: Any) -> Any:
    """A value as the field wants it (from the command line a string, from TOML maybe a list or number)."""
    if key in ("features", "order", "splits"):
        items = tuple(str(v) for v in value) if isinstance(value, list) else _split_list(str(value))
        return items
    if key == "test":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except ValueError:
            return str(value)
    if key == "size":
        if isinstance(value, list) and len(value) == 2:
            return int(value[0]), int(value[1])
        parts = str(value).lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise SpecError(f"size= is HEIGHTxWIDTH in pixels, e.g. 32x32, not {value!r}")
        return int(parts[0]), int(parts[1])
    if key == "sep":
        text = str(value)
        text = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}.get(text, text)
        if len(text) != 1:
            raise SpecError(f"sep= is one character (or tab), not {value!r}")
        return text
    if isinstance(value, (list, dict)):
        raise SpecError(f"{key}= takes one value, not {value!r}")
    return str(value)


_KEYS = {f.name for f in fields(DataSpec)} - {"format", "path"}


def from_dict(values: dict[str, Any], base: Path | None = None) -> DataSpec:
    """A spec from a mapping (a TOML table, a stored config). Relative paths are taken from `base`."""
    items = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(items) - _KEYS - {"format", "path"})
    if unknown:
        raise SpecError(f"unknown data key(s) {', '.join(unknown)}; known: format, path, {', '.join(sorted(_KEYS))}")
    path = items.pop("path", None)
    if not path:
        raise SpecError("the data spec names no path")
    path = str(path)
    fmt = items.pop("format", None)
    kwargs = {k: _convert(k, v) for k, v in items.items() if v is not None}
    if base is not None:
        if not Path(path).is_absolute() and (fmt != "hf" or (base / path).exists()):
            path = str(base / path)
        if isinstance(kwargs.get("test"), str) and not Path(kwargs["test"]).is_absolute():
            kwargs["test"] = str(base / kwargs["test"])
    return DataSpec(_format(str(fmt) if fmt else None, path), path, **kwargs)


def _format(given: str | None, path: str) -> str:
    if given:
        return _ALIASES.get(given.lower(), given.lower())
    p = Path(path)
    if p.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[p.suffix.lower()]
    if p.is_dir():
        return "images"
    raise SpecError(f"cannot tell the format of {path!r} from its name; write FORMAT:PATH with FORMAT one of "
                    f"{', '.join(FORMATS)}")


def parse(text: str) -> DataSpec:
    """`FORMAT:PATH[,KEY=VALUE]...`, or the path of a TOML file holding the same keys."""
    text = text.strip()
    if not text:
        raise SpecError("an empty data spec; write FORMAT:PATH[,KEY=VALUE]..., e.g. "
                        "csv:data.csv,text=body,label=intent")
    if text.endswith(".toml") and "," not in text:
        return parse_toml(Path(text.removeprefix("toml:")))
    head, *rest = text.split(",")
    fmt, sep, path = head.partition(":")
    if not sep or fmt.lower() not in (*FORMATS, *_ALIASES) or len(fmt) < 2:  # C:\ or a bare path: no format
        fmt, path = "", head
    values: dict[str, Any] = {"path": path.strip()}
    if fmt:
        values["format"] = fmt
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"expected KEY=VALUE after the path, got {item!r} (values cannot hold commas; "
                            "use a TOML file for those)")
        if key.strip().replace("-", "_") in values:
            raise SpecError(f"{key.strip()}= is given twice")
        values[key.strip().replace("-", "_")] = value.strip()
    return from_dict(values)


def parse_toml(path: Path) -> DataSpec:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise SpecError("reading a TOML data spec on Python 3.10 needs tomli: pip install tomli") from None
    if not path.exists():
        raise SpecError(f"{path} does not exist")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    table = doc.get("data", doc)
    if not isinstance(table, dict):
        raise SpecError(f"{path}: [data] must be a table")
    return from_dict(table, path.parent)


def check_paths(spec: DataSpec) -> None:
    """The files the spec names exist (a cheap check before anything is read)."""
    for p in spec.local_paths():
        if not p.exists():
            raise SpecError(f"{p} does not exist")
        if spec.format == "images" and p == Path(spec.path) and not p.is_dir():
            raise SpecError(f"{p} is not a folder; an image data set is a folder with one subfolder per class")
        if spec.format not in ("images", "hf") and p.is_dir():
            raise SpecError(f"{p} is a folder; {spec.format} data is one file")
        if not os.access(p, os.R_OK):
            raise SpecError(f"{p} is not readable")
