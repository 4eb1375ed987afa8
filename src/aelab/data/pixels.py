"""Pixel arrays: any batch of images -> the float32 (n, 1, 28, 28) tensor the models take, and back to bytes.

``to_pixels(array)`` turns a batch given as numpy or torch, of shape (n, 28, 28), (n, 1, 28, 28) or (n, 784),
uint8 in 0..255 (any integer type) or float in [0, 1], into the float32 (n, 1, 28, 28) tensor the models take.
Every problem raises ``InputError`` naming the first bad image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.errors import InputError

SIDE = 28
PIXELS = SIDE * SIDE
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
SHAPES_HELP = "(n, 28, 28), (n, 1, 28, 28) or (n, 784)"


class ResizeWarning(UserWarning):
    """Images that were not 28x28 were resized (``--resize``)."""


# ------------------------------------------------------------------------------------------ pixel arrays
def batch_shape_ok(shape: tuple[int, ...]) -> bool:
    return (len(shape) == 3 and shape[1:] == (SIDE, SIDE)) or (len(shape) == 4 and shape[1:] == (1, SIDE, SIDE)) \
        or (len(shape) == 2 and shape[1] == PIXELS)


def check_batch_shape(shape: tuple[int, ...], what: str = "images") -> None:
    if not batch_shape_ok(tuple(shape)):
        hint = "; one image? add a batch axis (x[None])" if tuple(shape) in ((SIDE, SIDE), (PIXELS,)) else ""
        raise InputError(f"{what} have shape {tuple(shape)}, expected {SHAPES_HELP}{hint}")


def to_pixels(batch: Any, what: str = "images", first_index: int = 0) -> torch.Tensor:
    """A batch of images -> float32 (n, 1, 28, 28) in [0, 1].

    Integer arrays are pixel values 0..255, float arrays values in [0, 1]; NaN, infinities and values out of
    range raise ``InputError`` naming the first bad image (counted from ``first_index``).
    """
    if isinstance(batch, torch.Tensor):
        t = batch
    else:
        arr = np.asarray(batch)
        if arr.dtype == object:
            raise InputError(f"{what} are Python objects; give a numeric array")
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # one batch: a small copy
    check_batch_shape(tuple(t.shape), what)
    t = t.reshape(t.shape[0], 1, SIDE, SIDE)
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    if t.dtype == torch.uint8:
        return t.to(torch.float32).div_(255.0)
    if t.is_complex():
        raise InputError(f"{what} are complex numbers; give real pixel values")
    if not t.is_floating_point():  # other integer types: pixel values 0..255
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > 255):
            bad = int(((t < 0) | (t > 255)).flatten(1).any(1).nonzero()[0, 0])
            raise InputError(f"{what}: image {first_index + bad} has integer pixels outside 0..255; give uint8 "
                             f"0..255 or float 0..1")
        return t.to(torch.float32).div_(255.0)
    t = t.to(torch.float32)
    if t.numel():
        finite = torch.isfinite(t).flatten(1).all(1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise InputError(f"{what}: image {first_index + bad} holds NaN or infinite values; remove or fix it")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            bad = int(((t < -1e-6) | (t > 1.0 + 1e-6)).flatten(1).any(1).nonzero()[0, 0])
            scale = "; divide 0..255 values by 255" if hi > 1.0 + 1e-6 and hi <= 255.0 and lo >= 0 else ""
            raise InputError(f"{what}: image {first_index + bad} has float pixels outside [0, 1] (min {lo:.3g}, "
                             f"max {hi:.3g}){scale}")
        t = t.clamp_(0.0, 1.0)
    return t


def to_uint8(pixels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] (any shape) -> uint8 0..255, rounded."""
    a = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    return np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """One image file -> uint8 (28, 28) grey; colour is converted (ITU-R 601 luma), other sizes resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                flat = Image.new("RGBA", im.size, (0, 0, 0, 255))  # transparent -> black background
                im = Image.alpha_composite(flat, im)
            if im.mode == "I;16" or im.mode == "I":
                a = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0, 0, 255)
                                     .astype(np.uint8))
            grey = im.convert("L")
            if grey.size != (SIDE, SIDE):
                grey = grey.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            return np.asarray(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable image ({type(err).__name__}: {str(err)[:60]})") from None


def image_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    """uint8 (h, w) -> PNG bytes, optionally enlarged by an integer factor (nearest neighbour)."""
    from PIL import Image

    if scale > 1:
        pixels = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()
