"""The explorer's input checks: every bad request becomes an ``ApiError`` with a one-line message.

Latent codes (wrong length, non-numbers, NaN, infinities, values beyond +-1e6), query parameters (unknown
names, repeats, out-of-range numbers), path parameters (read here, not by the router: its integer convertor
raised past 4,300 digits, a 500), request bodies (empty, over the size limit, whatever Content-Length
claims: the body is counted as it arrives) and uploaded images (not an image, larger than 4096 pixels a side)
are refused with a 4xx and ``{"error": "..."}``; nothing a client sends reaches the model unchecked.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from starlette.requests import Request

from aelab.data.pixels import pil_to_array
from aelab.errors import InputError

MAX_ABS_CODE = 1e6    # latent values beyond are refused; the largest test code of a trained latent-16 run: 32
MAX_IMAGE_SIDE = 4096  # uploads larger than this (either side) are refused before their pixels are decoded
MAX_STEPS, MAX_K = 64, 64
MAX_DIGITS = 18  # a whole number in a request has at most this many digits (int() refuses past 4,300: a 500)


class ApiError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def read_upload(data: bytes, shape: Sequence[int] = (1, 28, 28), resize: str = "crop"
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """Image file bytes -> uint8 (H, W) grey or (H, W, 3) RGB of the model's ``shape`` (C, H, W) (transparency on
    black, other sizes resized by ``resize``, the run's own: crop, pad or stretch), and its size."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]) as im:
            w, h = im.size
            if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE or w < 1 or h < 1:
                raise InputError(f"the image is {w}x{h} pixels; send at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}")
            im.load()
            return pil_to_array(im, int(shape[0]), (int(shape[1]), int(shape[2])), resize).copy(), (w, h)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError("the upload is not an image; send a PNG (or JPEG, GIF, BMP, TIFF, WebP)") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken files; all mean "not an image"
        why = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise InputError(f"the upload is a damaged or unsupported image ({why}); send a PNG") from None


def light_background(image: np.ndarray) -> bool:
    """True when the border is light (a dark drawing on paper); the data sets draw light things on black."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(border.mean()) > 127.5


def parse_codes(rows: Any, latent: int, max_batch: int, what: str = "codes") -> torch.Tensor:
    """A JSON list of lists of numbers -> float32 (n, latent); every problem raises ApiError(400 or 413)."""
    if not isinstance(rows, list) or not rows:
        raise ApiError(400, f"{what} must be a non-empty list of lists of {latent} numbers")
    if len(rows) > max_batch:
        raise ApiError(413, f"{len(rows)} {what}; at most {max_batch} per request (split the batch)")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != latent:
            got = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            raise ApiError(400, f"{what}[{i}] is {got}, but the model's latent size is {latent}")
        if not all(type(v) in (int, float) for v in row):  # bool and str are not numbers here
            raise ApiError(400, f"{what}[{i}] holds something other than numbers")
    try:
        z = np.asarray(rows, dtype=np.float64)
    except (OverflowError, ValueError):
        raise ApiError(400, f"{what}: a number is too large") from None
    return checked(z, what)


def checked(z: np.ndarray, what: str) -> torch.Tensor:
    finite = np.isfinite(z)
    if not finite.all():
        raise ApiError(400, f"{what}: row {int(np.argwhere(~finite)[0, 0])} holds NaN or infinite values")
    if z.size and float(np.abs(z).max()) > MAX_ABS_CODE:
        raise ApiError(400, f"{what}: values must lie within +-{MAX_ABS_CODE:g} (got {float(np.abs(z).max()):.3g})")
    return torch.from_numpy(z.astype(np.float32))


def whole_number(raw: str, name: str) -> int:
    """``raw`` (a query or path parameter) as an int: ASCII digits with an optional sign, at most ``MAX_DIGITS``
    of them; anything else raises ApiError(400)."""
    digits = raw[1:] if raw[:1] in ("-", "+") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ApiError(400, f"{name} must be a whole number, not {raw[:40]!r}")
    if len(digits) > MAX_DIGITS:
        raise ApiError(400, f"{name} has {len(digits):,} digits; it must be a whole number of at most {MAX_DIGITS}")
    return int(raw)


def parse_code_text(text: str, latent: int) -> torch.Tensor:
    """``z=0.1,-2,3.5`` (one code, comma-separated) -> float32 (1, latent)."""
    parts = text.split(",")
    if len(parts) != latent:
        raise ApiError(400, f"z has {len(parts)} values, but the model's latent size is {latent}")
    try:
        z = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise ApiError(400, "z must be comma-separated numbers") from None
    return checked(z[None], "z")


class Query:
    """The query parameters of one request, checked against the names an endpoint takes."""

    def __init__(self, request: Request, allowed: Sequence[str]):
        self.params = request.query_params
        for name in self.params:
            if name not in allowed:
                takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
                raise ApiError(400, f"unknown parameter {name!r} for {request.url.path}; {takes}")
            if len(self.params.getlist(name)) > 1:
                raise ApiError(400, f"parameter {name!r} given more than once")

    def text(self, name: str, default: str | None = None) -> str:
        if name not in self.params:
            if default is None:
                raise ApiError(400, f"missing parameter {name!r}")
            return default
        return self.params[name]

    def choice(self, name: str, options: Sequence[str]) -> str:
        value = self.text(name, options[0])
        if value not in options:
            raise ApiError(400, f"{name} must be one of {', '.join(options)}, not {value[:40]!r}")
        return value

    def integer(self, name: str, default: int | None, lo: int, hi: int) -> int:
        value = whole_number(self.text(name, None if default is None else str(default)), name)
        if not lo <= value <= hi:
            raise ApiError(400, f"{name} must lie in {lo}..{hi}, not {value}")
        return value

    def number(self, name: str) -> float:
        raw = self.text(name)
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be a number, not {raw[:40]!r}") from None
        if not math.isfinite(value) or abs(value) > MAX_ABS_CODE:
            raise ApiError(400, f"{name} must be a finite number within +-{MAX_ABS_CODE:g}")
        return value


async def read_body(request: Request, limit: int, what: str = "body") -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > MAX_DIGITS or int(declared) > limit):
        raise ApiError(413, f"the {what} is {declared[:24]} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the {what} is over {limit:,} bytes; at most {limit:,} are accepted")
        chunks.append(chunk)
    if not size:
        raise ApiError(400, f"empty {what}")
    return b"".join(chunks)
