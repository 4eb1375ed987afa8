"""Resizing one image to the size a run asks for (``--image-size H,W``, ``--resize MODE``): ``fit`` is the one
place aelab resizes an image, for every image it reads (image folders, arrays, the built-in sets converted, the
inputs of ``aelab encode`` and the explorer), so that training and use see the same pixels.

- ``crop`` (the default): scaled to cover the size, then the centre cut out (Pillow's ``ImageOps.fit``): the
  aspect is kept, the edges of the longer side are lost.
- ``pad``: scaled to fit inside the size, then laid on black, centred: the whole image and its aspect are kept,
  with black bars (at least 1 pixel of the image remains on each side).
- ``stretch``: resized to exactly the size: the whole image is kept, its aspect is not.

Every mode resamples with Lanczos. The modes' words are ``aelab.config.RESIZE_MODES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from PIL import Image, ImageOps

from aelab.config import RESIZE_MODES
from aelab.errors import ConfigError

METHOD = Image.Resampling.LANCZOS


class Target(NamedTuple):
    """The size every image is resized to, (H, W), and how (``mode``). Written as text it is the key of the decoded
    caches: '32' for a square crop (as before sizes had two sides and modes existed, so those caches stay valid),
    '48x80' for another crop, '48x80-pad' for another mode."""

    h: int
    w: int
    mode: str = "crop"

    def __str__(self) -> str:
        side = str(self.h) if self.h == self.w else f"{self.h}x{self.w}"
        return side if self.mode == "crop" else f"{side}-{self.mode}"

    @property
    def size(self) -> tuple[int, int]:
        return self.h, self.w


def target(image_size: int | Sequence[Any] | None, mode: str = "crop") -> Target | None:
    """``--image-size`` (N, a pair (H, W), or a ``Target`` already) and ``--resize`` as a ``Target``; None: the
    images keep their own size."""
    if image_size is None:
        return None
    if isinstance(image_size, Target):
        return image_size
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return Target(int(h), int(w), check_mode(mode))


def check_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize {mode!r}; choose one of: {', '.join(RESIZE_MODES)}")
    return mode


def fit(im: Image.Image, size: tuple[int, int], mode: str = "crop") -> Image.Image:
    """``im`` (any Pillow mode without alpha, as ``pixels.pil_to_array`` gives it) at ``size`` (H, W), by ``mode``
    (see the module docstring); an image of that size already is returned as it is."""
    h, w = size
    if im.size == (w, h):
        return im
    if check_mode(mode) == "crop":
        return ImageOps.fit(im, (w, h), METHOD)
    if mode == "stretch":
        return im.resize((w, h), METHOD)
    scale = min(w / im.width, h / im.height)
    inner = (min(w, max(1, round(im.width * scale))), min(h, max(1, round(im.height * scale))))
    out = Image.new(im.mode, (w, h))  # zeros: black in every mode
    out.paste(im.resize(inner, METHOD), ((w - inner[0]) // 2, (h - inner[1]) // 2))
    return out


def resize_record(size: Target | None) -> dict[str, Any] | None:
    """What a run's data record says of the resizing: {"size": [H, W], "mode": MODE, "means": words}; None when
    the images keep their own size."""
    return None if size is None else {"size": [size.h, size.w], "mode": size.mode, "means": RESIZE_MODES[size.mode]}


def resize_note(size: Target | None) -> str | None:
    """The note of a data set's loading that says how its images were resized (None: they were not)."""
    return None if size is None else f"every image resized to {size.h}x{size.w} by {size.mode}: " \
                                     f"{RESIZE_MODES[size.mode]}"
