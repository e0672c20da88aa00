"""Array sources: `.npz` files and folders of images (one subfolder per class), read in chunks.

An uncompressed `.npz` (``numpy.savez``) is memory-mapped member by member, so only the rows being
checked are in memory; a compressed one (``savez_compressed``) has to be inflated whole, one array at
a time. Images are decoded one chunk at a time and kept as bytes (uint8, [C, H, W]), scaled to [0, 1]
per batch.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lifelong.data.spec import DataSpec, SpecError
from lifelong.data.table import TEST, TRAIN, VALID, Featurize, Table, TableBuilder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_SPLIT_FOLDERS = {"train": TRAIN, "valid": VALID, "val": VALID, "validation": VALID, "test": TEST}
CHUNK = 4096


# -- npz -----------------------------------------------------------------------------------------------
def _npz_member(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One array of an .npz: memory-mapped when stored uncompressed, else read."""
    info = archive.getinfo(name + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        if dtype.hasobject:
            raise SpecError(f"{path}: array {name!r} holds Python objects; save numbers or strings")
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    with archive.open(name + ".npy") as f:
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except ValueError as exc:
            raise SpecError(f"{path}: array {name!r}: {exc}") from None


def npz_table(spec: DataSpec, featurize: Featurize | None = None) -> Table:
    path = Path(spec.path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SpecError(f"{path} is not an .npz file ({exc})") from None
    with archive:
        names = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
        x_name = spec.features[0] if spec.features else ("x" if "x" in names else None)
        if spec.features and len(spec.features) > 1:
            raise SpecError("npz: features= names one array (of shape [N, ...])")
        wanted = {"features": x_name, "label": spec.label_column, "task": spec.task, "time": spec.time,
                  "split": spec.split}
        if x_name is None:
            raise SpecError(f"{path} has no array 'x'; name the inputs with features=NAME (it has {', '.join(names)})")
        for role, name in wanted.items():
            if name is not None and name not in names:
                raise SpecError(f"{path} has no array {name!r} for the {role}; it has {', '.join(names)}")
        arrays = {name: _npz_member(path, archive, name) for name in wanted.values() if name is not None}
        test_arrays = {}
        if isinstance(spec.test, str):
            raise SpecError("npz: put the test rows in arrays of the same file (x_test, y_test) or give split=NAME")
        if f"{x_name}_test" in names and f"{spec.label_column}_test" in names and spec.split is None:
            test_arrays = {x_name: _npz_member(path, archive, f"{x_name}_test"),
                           spec.label_column: _npz_member(path, archive, f"{spec.label_column}_test")}
    x = arrays[x_name]
    if x.dtype.kind not in "fiub" and not (x.dtype.kind == "U" and x.ndim == 1):
        raise SpecError(f"{path}: array {x_name!r} holds {x.dtype} values; inputs are numbers (or texts, 1-D)")
    text = x.dtype.kind == "U"
    for name, array in arrays.items():
        if len(array) != len(x):
            raise SpecError(f"{path}: array {name!r} has {len(array)} rows and {x_name!r} has {len(x)}")
        if name != x_name and array.ndim != 1:
            raise SpecError(f"{path}: array {name!r} has shape {list(array.shape)}; one value per row is needed")
    builder = TableBuilder(str(path), [x_name], spec.label_column, text, featurize, spec.task, spec.time, spec.split,
                           keep_uint8=True)
    _label_kind(path, arrays[spec.label_column], spec.label_column)
    if test_arrays:
        _label_kind(path, test_arrays[spec.label_column], spec.label_column + "_test")
    # with x_test/y_test the file says which rows are for testing: the others are all for training
    for part, split in ((arrays, TRAIN if test_arrays else None), (test_arrays, TEST)):
        n = len(part[x_name]) if part else 0
        for start in range(0, n, CHUNK):
            builder.add({k: v[start: start + CHUNK] for k, v in part.items()}, split)
    return builder.finish()


def _label_kind(path: Path, y: np.ndarray, name: str) -> None:
    if y.dtype.kind not in "iuU":
        raise SpecError(f"{path}: array {name!r} holds {y.dtype} labels; labels are integers or strings")


# -- image folders -------------------------------------------------------------------------------------
def _class_folders(root: Path) -> list[tuple[Path, int | None]]:
    """(class-folder parent, split) pairs: the root itself, or its train/valid/test folders."""
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subs and {p.name.lower() for p in subs} <= set(_SPLIT_FOLDERS) and any(p.name.lower() == "train" for p in subs):
        return [(p, _SPLIT_FOLDERS[p.name.lower()]) for p in sorted(subs)]
    return [(root, None)]


def image_files(root: Path) -> list[tuple[Path, str, int | None]]:
    """Every image as (file, class, split), classes and files in name order."""
    out: list[tuple[Path, str, int | None]] = []
    for parent, split in _class_folders(root):
        classes = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise SpecError(f"{parent} has no class folders; an image data set is a folder with one subfolder "
                            "per class (optionally inside train/ and test/)")
        for folder in classes:
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise SpecError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend((f, folder.name, split) for f in files)
    return out


def picture(opened: Any, size: tuple[int, int] | None, mode: str | None) -> np.ndarray:
    """An opened PIL image as bytes [C, H, W]: `mode` L (grey) or RGB, else grey for grey pictures and
    RGB for the others; resized to `size` (H, W) when given. The service decodes pictures the same way."""
    from PIL import Image

    opened.load()
    target = mode or ("L" if opened.mode in ("L", "LA", "1", "I", "I;16", "F") else "RGB")
    img = opened.convert(target)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode(path: Path, size: tuple[int, int] | None, mode: str | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return picture(opened, size, mode)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SpecError(f"{path} is not a readable image ({exc})") from None


def image_table(spec: DataSpec) -> Table:
    files = image_files(Path(spec.path))
    builder = TableBuilder(spec.path, ["image"], "label", keep_uint8=True)
    split_given = any(s is not None for _, _, s in files)
    first: tuple[Path, tuple[int, ...]] | None = None
    for start in range(0, len(files), CHUNK):
        part = files[start: start + CHUNK]
        images = []
        for path, _, _ in part:
            image = _decode(path, spec.size, spec.mode)
            if first is None:
                first = (path, image.shape)
            elif image.shape != first[1]:
                raise SpecError(f"mixed shapes: {path} is {_describe(image.shape)} but {first[0]} is "
                                f"{_describe(first[1])}; give size=HxW (and mode=L or RGB) to resize them all")
            images.append(image)
        chunk: dict[str, Any] = {"image": np.stack(images), "label": [c for _, c, _ in part]}
        if split_given:
            builder.split_col = "split"
            chunk["split"] = [{TRAIN: "train", VALID: "valid", TEST: "test"}[s if s is not None else TRAIN]
                              for _, _, s in part]
        builder.add(chunk)
    return builder.finish()


def _describe(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]} {'grey' if shape[0] == 1 else 'RGB'}"

