"""Pixel arrays: any batch of images -> the float32 (n, C, H, W) tensor the models take, and back to bytes.

A model's image shape is (C, H, W): (1, 28, 28) for the built-in data sets, and whatever the user's own data
set gives (``aelab.data.own``). ``to_pixels(array, shape=...)`` turns a batch given as numpy or torch, of
shape (n, H, W) (grey), (n, C, H, W), (n, H, W, C) (colour, channels last) or (n, C*H*W), uint8 in 0..255 (any
integer type) or float in [0, 1], into the float32 (n, C, H, W) tensor the models take. Every problem raises
``InputError`` naming the first bad image. In memory a data set keeps uint8 images (n, H, W) when grey and
(n, C, H, W) when in colour (``as_nchw``); figures and PNG files take (n, H, W) or (n, H, W, C) (``display``).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageMode, UnidentifiedImageError

from aelab.data.resize import fit
from aelab.errors import AelabError, InputError, one_line

SIDE = 28
PIXELS = SIDE * SIDE
SHAPE = (1, SIDE, SIDE)  # (C, H, W) of the built-in data sets, and of every run without a recorded shape
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
SHAPES_HELP = "(n, 28, 28), (n, 1, 28, 28) or (n, 784)"


class ResizeWarning(UserWarning):
    """Images that were not of the model's size were resized (``--resize``)."""


# ------------------------------------------------------------------------------------------ image shapes
def image_shape(shape: Sequence[int] | None) -> tuple[int, int, int]:
    """(C, H, W) as a tuple of ints; None gives the built-in (1, 28, 28)."""
    return SHAPE if shape is None else (int(shape[0]), int(shape[1]), int(shape[2]))


def shape_text(shape: Sequence[int]) -> str:
    """(3, 32, 32) -> '32x32 RGB'; (1, 28, 28) -> '28x28 grey'."""
    c, h, w = image_shape(shape)
    return f"{h}x{w} {'grey' if c == 1 else 'RGB' if c == 3 else f'{c}-channel'}"


def shapes_help(shape: Sequence[int]) -> str:
    c, h, w = image_shape(shape)
    forms = ([f"(n, {h}, {w})"] if c == 1 else [f"(n, {h}, {w}, {c})"]) + [f"(n, {c}, {h}, {w})",
                                                                             f"(n, {c * h * w})"]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


def as_nchw(images: torch.Tensor) -> torch.Tensor:
    """A data set's images, (n, H, W) grey or (n, C, H, W), as (n, C, H, W) (a view, no copy)."""
    return images.unsqueeze(1) if images.dim() == 3 else images


def display(pixels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images (n, C, H, W) or (n, H, W) -> what figures and PNG files take: (n, H, W) grey, (n, H, W, C) colour."""
    a = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    if a.ndim == 4:
        return a[:, 0] if a.shape[1] == 1 else np.moveaxis(a, 1, -1)
    return a


def mosaic(tiles: np.ndarray, cols: int, fill: float | int = 1.0, gap: int = 1) -> np.ndarray:
    """Images (n, h, w) or (n, h, w, C) laid out ``cols`` per row with ``gap``-pixel lines of ``fill`` between."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[3:]), fill, dtype=tiles.dtype)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


# ------------------------------------------------------------------------------------------ pixel arrays
def batch_layout(shape: tuple[int, ...], image: Sequence[int] = SHAPE) -> str | None:
    """How a batch of ``shape`` holds images of ``image`` (C, H, W): 'nchw', 'nhwc', 'nhw', 'flat', or None."""
    c, h, w = image_shape(image)
    if len(shape) == 4 and shape[1:] == (c, h, w):
        return "nchw"
    if len(shape) == 4 and c > 1 and shape[1:] == (h, w, c):
        return "nhwc"
    if len(shape) == 3 and c == 1 and shape[1:] == (h, w):
        return "nhw"
    if len(shape) == 2 and shape[1] == c * h * w:
        return "flat"
    return None


def batch_shape_ok(shape: tuple[int, ...], image: Sequence[int] = SHAPE) -> bool:
    return batch_layout(tuple(shape), image) is not None


def check_batch_shape(shape: tuple[int, ...], what: str = "images", image: Sequence[int] = SHAPE) -> None:
    if not batch_shape_ok(tuple(shape), image):
        c, h, w = image_shape(image)
        one = tuple(shape) in ((h, w), (c, h, w), (h, w, c), (c * h * w,))
        hint = "; one image? add a batch axis (x[None])" if one else ""
        expected = SHAPES_HELP if image_shape(image) == SHAPE else shapes_help(image)
        raise InputError(f"{what} have shape {tuple(shape)}, expected {expected}{hint}")


def to_pixels(batch: Any, what: str = "images", first_index: int = 0, shape: Sequence[int] = SHAPE) -> torch.Tensor:
    """A batch of images of ``shape`` (C, H, W) -> float32 (n, C, H, W) in [0, 1].

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
    check_batch_shape(tuple(t.shape), what, shape)
    c, h, w = image_shape(shape)
    t = t.permute(0, 3, 1, 2) if batch_layout(tuple(t.shape), shape) == "nhwc" else t
    t = t.reshape(t.shape[0], c, h, w)
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


# ------------------------------------------------------------------------------------------ image files
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF")  # what Pillow may open: no plugin that runs a program (EPS)
FORMATS_TEXT = "PNG, JPEG, BMP, TIFF or GIF"
BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def is_grey_mode(mode: str) -> bool:
    """True for the Pillow modes without colour: 1, L, LA, La, I, I;16 (every byte order), F."""
    return ImageMode.getmode(mode).basemode == "L"


def _first(v: Any) -> int:
    """A TIFF tag's value: one number, or the first of a tuple (one per sample)."""
    return int(v[0]) if isinstance(v, tuple) else int(v)


def integer_format(im: Image.Image) -> tuple[int, bool]:
    """(bits, signed) of the integer samples an "I" or "I;16" Pillow image's file stores.

    "I;16" (16-bit PNG and TIFF): 16 unsigned. "I" is Pillow's 32-bit signed integer, holding what the file
    stores: a PNG at most 16 bits unsigned (Pillow before 11 opens 16-bit grey PNGs as "I"), a TIFF what its
    tags say (BitsPerSample 258, SampleFormat 339); otherwise 32 signed.
    """
    if im.mode.startswith("I;16"):
        return 16, False
    tags = getattr(im, "tag_v2", None)
    if tags is not None and tags.get(258):
        return _first(tags.get(258)), _first(tags.get(339, 1)) == 2
    return (16, False) if im.format == "PNG" else (32, True)


def integer_range(im: Image.Image) -> int:
    """The largest value an "I" or "I;16" image can hold as its file stores it (``integer_format``): the format's
    range, the same for every image of that format, never the image's own maximum."""
    bits, signed = integer_format(im)
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def _deep_to_grey(im: Image.Image) -> Image.Image:
    """An "I", "I;16" or "F" image -> "L" by the format's range (``integer_range``; float pixels are taken as
    they are, in [0, 1]); ``InputError`` for values outside that range."""
    a = np.asarray(im)
    if im.mode == "F":
        if not np.isfinite(a).all():
            raise InputError("holds NaN or infinite float pixels (Pillow mode F); remove or fix them")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            fix = "divide them by 255" if lo >= 0 and 2 < hi <= 255 else "divide them by 65535" if lo >= 0 and \
                255 < hi <= 65535 else "clip or scale them to [0, 1]"
            raise InputError(f"holds float pixels from {lo:.4g} to {hi:.4g} (Pillow mode F), but float pixels are "
                             f"taken as they are, in [0, 1]; {fix}")
        scaled = a.astype(np.float64) * 255.0
    else:
        top = integer_range(im)
        if a.dtype == np.int32 and integer_format(im) == (32, False):
            a = a.view(np.uint32)  # unsigned 32-bit samples that Pillow's signed "I" wrapped round
        if a.size and int(a.min()) < 0:
            raise InputError(f"holds negative pixels ({int(a.min())}, Pillow mode {im.mode}); give pixels from 0 to "
                             f"{top:,}")
        scaled = a.astype(np.float64) * (255.0 / top)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _has_alpha(im: Image.Image) -> bool:
    bands = im.getbands()
    if "A" in bands or "a" in bands:
        return True
    if im.mode in ("1", "L", "RGB", "P") and "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def pil_to_array(im: Any, channels: int = 1, size: tuple[int, int] | None = None, resize: str = "crop"
                 ) -> np.ndarray:
    """A Pillow image of any mode -> uint8 (H, W) grey (``channels`` 1) or (H, W, 3) RGB.

    Pixels are scaled by the range of their format, the same for every image: 8-bit modes as they are, "I;16"
    by 65535, "I" by the range of the integer its file stores (``integer_range``), "F" taken as it is, in
    [0, 1] (else ``InputError``). Transparency is laid on black; colour becomes grey by ITU-R 601 luma (Pillow's
    "L"), grey becomes RGB by repeating it; colour modes Pillow cannot make grey directly (LAB) go through RGB.
    ``size`` (H, W): resized to it by ``resize``, crop, pad or stretch (``data.resize.fit``, Lanczos).
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _deep_to_grey(im)
    elif _has_alpha(im):
        im = im.convert("LA").convert("RGBA") if im.mode == "La" else im.convert("RGBA")
        flat = Image.new("RGBA", im.size, (0, 0, 0, 255))  # transparent -> black background
        im = Image.alpha_composite(flat, im)
    target = "L" if channels == 1 else "RGB"
    try:
        im = im.convert(target)
    except ValueError:  # e.g. LAB -> L: Pillow converts it through RGB only
        try:
            im = im.convert("RGB").convert(target)
        except ValueError:
            raise InputError(f"is in Pillow mode {im.mode}, which this Pillow cannot convert to {target}; save it "
                             f"as RGB") from None
    if size is not None:
        im = fit(im, size, resize)
    return np.asarray(im, dtype=np.uint8)


def _bad_image(path: Path, err: BaseException) -> InputError:
    text = one_line(err, 120)
    if isinstance(err, BOMB_ERRORS):
        return InputError(f"{path}: more pixels than Pillow's decompression-bomb limit ({text}); downscale the "
                          f"image or remove it")
    if isinstance(err, UnidentifiedImageError):
        return InputError(f"{path}: not an image (not a {FORMATS_TEXT} file Pillow can identify); replace the file "
                          f"or remove it")
    return InputError(f"{path}: not a readable image ({text}); replace the file or remove it")


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """Open an image file with Pillow: the one place where every image file aelab reads is opened.

    Anything that goes wrong inside, opening, decoding or converting, is one ``InputError`` line naming the file:
    not an image (or not one of ``IMAGE_FORMATS``), damaged or truncated, pixels out of their range, or more
    pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``; the images over it, that
    Pillow would only warn about, are refused too: aelab holds every image of a data set in memory).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                yield im
    except InputError as err:  # the checks of the pixels (``pil_to_array``), which do not know the file
        raise InputError(f"{path}: {err}") from None
    except AelabError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken files; each is "not readable"
        raise _bad_image(path, err) from None


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """((H, W), Pillow mode) of an image file, from its header only (``open_image``'s checks)."""
    with open_image(path) as im:
        return (im.size[1], im.size[0]), im.mode


def read_image(path: Path, shape: Sequence[int] = SHAPE, resize: str = "crop") -> np.ndarray:
    """One image file -> uint8 (H, W) grey or (C, H, W) colour of ``shape``; colour is converted to grey (ITU-R
    601 luma) or grey to colour as ``shape`` asks, other sizes resized by ``resize`` (``data.resize.fit``).
    Every problem is one ``InputError`` line naming the file (``open_image``)."""
    c, h, w = image_shape(shape)
    with open_image(path) as im:
        im.load()
        a = pil_to_array(im, c, (h, w), resize)
    return a if c == 1 else np.moveaxis(a, -1, 0)


def image_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    """uint8 (h, w) grey or (h, w, 3) RGB -> PNG bytes, optionally enlarged by an integer factor (nearest
    neighbour)."""
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def side_by_side(tiles: Sequence[torch.Tensor | np.ndarray], separator: int = 128) -> np.ndarray:
    """Batches of pixels in [0, 1], each (b, C, H, W), -> uint8 (b, H, k*W + k - 1) grey or (b, H, .., C) colour:
    the k images of each row side by side, 1-pixel columns of ``separator`` between them."""
    parts = [display(to_uint8(t)) for t in tiles]
    sep = np.full((*parts[0].shape[:2], 1, *parts[0].shape[3:]), separator, dtype=np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [sep, p]
    return np.concatenate(out, axis=2)
