"""What clients send, checked and turned into model inputs, as the model's input spec says.

- ``array`` models take one nested list of numbers per input, shaped like a training sample (or flat,
  with as many numbers); with ``pixels`` the numbers are bytes 0-255 as the data held them (the model
  sees them divided by 255).
- ``image`` models take pictures: the base64 text of a PNG or JPEG file (a ``data:image/png;base64,``
  URL too), decoded as the training images were (`lifelong.data.arrays.picture`): converted to grey or
  RGB as the model's channels say, resized only when the training data was (``size=HxW``; any other
  size is refused, the model never saw one). At most `MAX_IMAGE_BYTES` of file and `MAX_PIXELS`
  pixels a picture. A nested list of pixel values 0-255 shaped [C, H, W] is taken too.
- ``text`` and ``tokens`` models take strings (`check_texts`; the service embeds or tokenises them).

Anything else is an `InputError` (HTTP 422 with its message; `InputTooLarge`: 413).

>>> import base64, io
>>> from PIL import Image
>>> buffer = io.BytesIO()
>>> Image.new("RGB", (5, 4), (255, 0, 0)).save(buffer, "PNG")
>>> png = base64.b64encode(buffer.getvalue()).decode()
>>> x = model_inputs({"kind": "image", "shape": [1, 4, 5], "resize": False}, [png])   # a grey model
>>> list(x.shape), round(float(x.max()), 3)   # red in grey, scaled to [0, 1]
([1, 1, 4, 5], 0.298)
>>> model_inputs({"kind": "image", "shape": [3, 8, 8], "resize": False}, [png])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lifelong.service.inputs.InputError: input 0 is 4x5 pixels (height x width); this model takes 8x8 pictures ...
>>> model_inputs({"kind": "image", "shape": [3, 8, 8], "resize": True}, [png]).shape   # trained with size=8x8
torch.Size([1, 3, 8, 8])
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

MAX_TEXT_CHARS = 2000
MAX_IMAGE_BYTES = 2 * 2**20  # one picture's file
MAX_PIXELS = 2**22  # one picture's width x height (4 megapixels), checked before it is decoded
FORMATS = ("PNG", "JPEG")
_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg);base64,", re.IGNORECASE)


class InputError(ValueError):
    """Input a client sent that this model cannot take; the message says why (`status`: the HTTP one)."""

    status = 422


class InputTooLarge(InputError):
    status = 413


def _shape_of(value: Any, where: str) -> list[int]:
    """The shape of a rectangular nested list of finite numbers (not bools); InputError otherwise."""
    shape: list[int] = []
    level = [value]
    while level and isinstance(level[0], list):
        width = len(level[0])
        if any(not isinstance(v, list) or len(v) != width for v in level):
            raise InputError(f"{where} is not a rectangular nested list of numbers")
        if width == 0:
            raise InputError(f"{where} holds an empty list")
        shape.append(width)
        level = [item for v in level for item in v]
    for v in level:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{where} holds {type(v).__name__} {str(v)[:40]!r} where a number belongs")
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"{where} holds {v}, not a finite number")
        if isinstance(v, int) and abs(v) > 2**53:
            raise InputError(f"{where} holds a number too large to be a model input")
    return shape


def parse_array(value: Any, shape: Sequence[int], where: str, pixels: bool = False) -> Tensor:
    """One nested list -> a float32 tensor of `shape` (given so, or flat); `pixels`: values 0-255, scaled."""
    size = math.prod(shape)
    if not isinstance(value, list):
        raise InputError(f"{where} is {type(value).__name__}; this model takes nested lists of numbers "
                         f"shaped {list(shape)}")
    got = _shape_of(value, where)
    if got != list(shape) and got != [size]:
        raise InputError(f"{where} has shape {got}; this model takes {list(shape)} (or a flat list of {size} numbers)")
    x = torch.tensor(value, dtype=torch.float32).reshape(*shape)
    if pixels:
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 255):
            raise InputError(f"{where} holds values outside 0-255; this model takes pixel values 0-255")
        x = x / 255.0
    return x


def parse_arrays(values: Sequence[Any], shape: Sequence[int], what: str = "input", pixels: bool = False) -> Tensor:
    """Nested lists -> a float32 tensor [N, *shape]; each value shaped like `shape`, or flat."""
    return torch.stack([parse_array(v, shape, f"{what} {i}", pixels) for i, v in enumerate(values)])


def check_texts(values: Sequence[Any], what: str = "input") -> list[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise InputError(f"{what} {i} is {type(value).__name__}; this model takes text (strings)")
        if not value.strip():
            raise InputError(f"{what} {i} is an empty string")
        if len(value) > MAX_TEXT_CHARS:
            raise InputError(f"{what} {i} has {len(value)} characters; at most {MAX_TEXT_CHARS} are taken")
    return list(values)


def decode_picture(value: str, shape: Sequence[int], resize: bool, where: str = "input") -> np.ndarray:
    """One picture (the base64 text of a PNG or JPEG file) as uint8 [C, H, W] of the model's `shape`."""
    from PIL import Image, UnidentifiedImageError

    from lifelong.data.arrays import picture

    channels, height, width = (int(n) for n in shape)
    text = value.strip()
    url = _DATA_URL.match(text)
    text = text[url.end():] if url else text
    if len(text) > (MAX_IMAGE_BYTES + 2) // 3 * 4:
        raise InputTooLarge(f"{where} is a file of more than {MAX_IMAGE_BYTES // 2**20} MiB; a picture may have "
                            "at most that")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where} is not base64 text; this model takes pictures: the base64 of a PNG or JPEG "
                         "file") from None
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
            w, h = opened.size
            if w * h > MAX_PIXELS:
                raise InputTooLarge(f"{where} is {h}x{w} pixels; a picture may have at most {MAX_PIXELS:,}")
            if not resize and (h, w) != (height, width):
                raise InputError(f"{where} is {h}x{w} pixels (height x width); this model takes {height}x{width} "
                                 f"pictures (its training pictures all had that size; train with "
                                 f"size={height}x{width} in the data spec to have any size resized)")
            target = "L" if channels == 1 else "RGB"
            try:
                return picture(opened, (height, width) if resize else None, target)
            except ValueError as exc:
                raise InputError(f"{where} is a picture of mode {opened.mode}, which cannot be converted to "
                                 f"{target} ({exc})") from None
    except Image.DecompressionBombError:
        raise InputTooLarge(f"{where} has too many pixels; a picture may have at most {MAX_PIXELS:,}") from None
    except UnidentifiedImageError:
        raise InputError(f"{where} is not a PNG or JPEG file; this model takes pictures: the base64 of a PNG or "
                         "JPEG file") from None
    except OSError as exc:  # a truncated or corrupt file
        raise InputError(f"{where} is not a readable PNG or JPEG file ({exc})") from None


def model_inputs(spec: dict[str, Any], values: Sequence[Any], what: str = "input") -> Tensor:
    """Inputs of an ``array`` or ``image`` model (its saved input spec) -> a float32 batch [N, *shape]."""
    shape = spec["shape"]
    if spec["kind"] != "image":
        return parse_arrays(values, shape, what, bool(spec.get("pixels")))
    rows = []
    for i, value in enumerate(values):
        where = f"{what} {i}"
        if isinstance(value, str):
            picture = decode_picture(value, shape, bool(spec.get("resize")), where)
            rows.append(torch.tensor(picture, dtype=torch.float32) / 255.0)  # as training scales its bytes
        elif isinstance(value, list):
            rows.append(parse_array(value, shape, where, pixels=True))
        else:
            raise InputError(f"{where} is {type(value).__name__}; this model takes pictures: the base64 of a PNG "
                             "or JPEG file")
    return torch.stack(rows)
