"""Image inputs a user names: the readers behind ``aelab encode INPUT`` and the other model-use commands.

``open_input(spec)`` opens what a user names on the command line, without reading its pixels yet:

- a data set split: ``fashion-mnist:test``, ``mnist:train`` (the official files, checksummed; labels known);
- an IDX image file, gzip or raw (``*-images-idx3-ubyte[.gz]``); its labels come along when the matching
  ``*-labels-idx1-ubyte[.gz]`` file lies beside it. Raw files are memory-mapped, gzip files read in order;
- a ``.npy`` array, opened memory-mapped (header, shape, dtype) and read a batch of rows at a time, never
  the whole file; a ``.npz`` holding ``x`` (and optionally ``y`` and ``classes``), read whole;
- a folder of images (PNG, also JPEG/BMP/GIF/TIFF), read in sorted order; converted to the model's channels
  (colour to grey by luma, grey to RGB by repetition). Images must have the model's size, or are resized when
  ``resize`` is True (crop: the centre cut to the aspect) or a mode of ``data.resize`` (the run's own ``--resize``),
  with a warning. When the folder holds one sub-folder per
  class and no images of its own, the sub-folder names are the labels.

Every source reads images of the model's shape (C, H, W) (``shape``; (1, 28, 28) for the built-in data sets)
and yields batches of uint8 or float arrays, (b, H, W) grey or (b, C, H, W), through ``ImageSource.batches``;
file names (folders) and labels (data sets, IDX with labels, class folders) travel with the images. Every
problem raises ``InputError``: one line naming the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aelab.data.arrays import texts
from aelab.data.datasets import DATASETS, load_raw
from aelab.data.pixels import (
    IMAGE_SUFFIXES,
    SHAPE,
    ResizeWarning,
    batch_shape_ok,
    image_header,
    image_shape,
    read_image,
    shape_text,
    shapes_help,
)
from aelab.errors import InputError


# ------------------------------------------------------------------------------------------ sources
@dataclass
class ImageSource:
    """Images of one input, read a batch at a time; ``read(start, stop)`` returns (b, H, W) or (b, C, H, W)
    uint8 or float."""

    label: str                       # what error messages call it (a path or a split)
    n: int
    read: Callable[[int, int], np.ndarray]
    labels: np.ndarray | None = None  # int64 (n,), when known
    classes: tuple[str, ...] | None = None  # label index -> class name, when known
    names: list[str] | None = None   # file names (folders), when known
    resized: int = 0                 # images that will be resized on reading
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int = 1024, limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(start index, images) batches in order; at most ``batch_size`` images are in memory at once."""
        stop = self.n if limit is None else min(self.n, limit)
        for start in range(0, stop, batch_size):
            yield start, self.read(start, min(start + batch_size, stop))

    def class_name(self, i: int) -> str | None:
        if self.labels is None or self.classes is None:
            return None
        k = int(self.labels[i])
        return self.classes[k] if 0 <= k < len(self.classes) else str(k)


def open_input(spec: str | os.PathLike, resize: bool | str = False, data_dir: str | os.PathLike | None = None,
               shape: tuple[int, int, int] = SHAPE) -> ImageSource:
    """Open a data set split (``fashion-mnist:test``), an IDX file, a ``.npy`` / ``.npz`` array or a folder of
    images, for a model that takes images of ``shape`` (C, H, W)."""
    text = str(spec)
    path = Path(text)
    shape = image_shape(shape)
    split = _split_spec(text)
    if split is not None and not path.exists():
        if shape != SHAPE:
            raise InputError(f"{text}: 28x28 grey images, but the model takes {shape_text(shape)}; give images of "
                             f"that shape (for the run's own data: data:test)")
        return _dataset_source(*split, data_dir=data_dir)
    if not path.exists():
        raise InputError(f"{text}: no such file or folder; give a data set split (e.g. fashion-mnist:test), an "
                         f"IDX file, a .npy array or a folder of PNG images")
    if path.is_dir():
        return _folder_source(path, resize, shape)
    if path.suffix == ".npy":
        return _npy_source(path, shape)
    if path.suffix == ".npz":
        return _npz_source(path, shape)
    if _looks_like_idx(path):
        return _idx_source(path, shape)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path}: a single image; put it in a folder and give the folder")
    raise InputError(f"{path}: not a readable input (expected an IDX file, a .npy array or a folder of PNG "
                     f"images)")


def _split_spec(text: str) -> tuple[str, str] | None:
    name, sep, split = text.partition(":")
    if not sep or name not in DATASETS:
        return None
    return name, split


def _dataset_source(name: str, split: str, data_dir: str | os.PathLike | None) -> ImageSource:
    if split not in ("train", "test"):
        raise InputError(f"{name}:{split}: unknown split {split!r}; use {name}:train or {name}:test")
    (train_x, train_y, test_x, test_y), _ = load_raw(name, data_dir)
    x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
    return ImageSource(label=f"{name}:{split}", n=len(x), read=lambda a, b: x[a:b],
                       labels=y.astype(np.int64), classes=DATASETS[name].classes)


# ------------------------------------------------------------------------------------------ .npy arrays
def _npy_source(path: Path, shape: tuple[int, int, int]) -> ImageSource:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:80]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "uifb":
        raise InputError(f"{path}: holds {getattr(arr, 'dtype', type(arr))} values, expected uint8 0..255 or "
                         f"float 0..1 pixels")
    if not batch_shape_ok(arr.shape, shape):
        raise InputError(f"{path}: images of shape {arr.shape}, expected {shapes_help(shape)}")
    n = int(arr.shape[0])
    if n == 0:
        raise InputError(f"{path}: holds no images")
    rows = arr.shape[1:]
    if arr.flags.c_contiguous and isinstance(arr, np.memmap):
        # Rows are read with plain file reads rather than through the mapping, so that pages already used
        # do not stay in this process's resident memory: memory stays bounded by one batch.
        reader = _RowReader(path, int(arr.offset), arr.dtype, rows)
        return ImageSource(label=str(path), n=n, read=reader)
    return ImageSource(label=str(path), n=n, read=lambda a, b: np.array(arr[a:b]))


def _npz_source(path: Path, shape: tuple[int, int, int]) -> ImageSource:
    """The ``x`` of a ``.npz`` (with ``y`` and ``classes`` when there), read whole."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x", "y", "classes") if k in z.files}
            keys = z.files
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable .npz file ({str(err).splitlines()[0][:80]})") from None
    if "x" not in arrays:
        raise InputError(f"{path}: no array 'x' (it holds {', '.join(keys) or 'nothing'}); save the images as x")
    x, y = arrays["x"], arrays.get("y")
    classes = tuple(texts(arrays["classes"])) if "classes" in arrays else None  # bytes decoded, as for training
    if x.dtype.kind not in "uifb" or not batch_shape_ok(x.shape, shape):
        raise InputError(f"{path}: x holds {x.dtype} images of shape {x.shape}, expected {shapes_help(shape)}")
    labels = y.astype(np.int64) if y is not None and y.dtype.kind in "iu" and y.shape == (len(x),) else None
    return ImageSource(label=str(path), n=len(x), read=lambda a, b: x[a:b], labels=labels,
                       classes=classes if labels is not None else None)


class _RowReader:
    """Rows [a, b) of a C-ordered array stored at ``offset`` in a file, read with seek + read."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, rows: tuple[int, ...]):
        self.path, self.offset, self.dtype, self.rows = path, offset, dtype, rows
        self.row = int(np.prod(rows))

    def __call__(self, start: int, stop: int) -> np.ndarray:
        count = (stop - start) * self.row
        with self.path.open("rb") as fh:
            fh.seek(self.offset + start * self.row * self.dtype.itemsize)
            out = np.fromfile(fh, dtype=self.dtype, count=count)
        if out.size != count:
            raise InputError(f"{self.path}: ends before image {start + out.size // self.row}; it is truncated")
        return out.reshape(stop - start, *self.rows)


# ------------------------------------------------------------------------------------------ IDX files
def _looks_like_idx(path: Path) -> bool:
    return "idx" in path.name or path.suffix in (".idx", ".gz", ".ubyte")


def _idx_header(fh: Any, path: Path) -> tuple[int, ...]:
    head = fh.read(4)
    if len(head) < 4:
        raise InputError(f"{path}: too short for an IDX file")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or code != 0x08 or ndim not in (1, 3):
        raise InputError(f"{path}: not an IDX file of uint8 images or labels (magic {struct.unpack('>I', head)[0]})")
    raw = fh.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise InputError(f"{path}: IDX header is truncated")
    return struct.unpack(f">{ndim}I", raw)


def _open_idx(path: Path) -> Any:
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb"), gz


def _idx_source(path: Path, shape: tuple[int, int, int]) -> ImageSource:
    fh, gz = _open_idx(path)
    try:
        dims = _idx_header(fh, path)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(f"{path}: damaged IDX file ({err})") from None
    finally:
        fh.close()
    if len(dims) != 3:
        raise InputError(f"{path}: an IDX label file, not images; give the matching images file")
    n, h, w = dims
    offset = 4 + 4 * 3
    if (1, h, w) != shape:
        raise InputError(f"{path}: images of {h}x{w} grey, but the model takes {shape_text(shape)}")
    if n == 0:
        raise InputError(f"{path}: holds no images")
    labels = _idx_labels(path, n)
    if not gz:
        size = path.stat().st_size
        if size < offset + n * h * w:
            raise InputError(f"{path}: header says {n} images but the file holds {size - offset} bytes; it is "
                             f"truncated")
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(n, h, w))
        return ImageSource(label=str(path), n=n, read=lambda a, b: np.array(mm[a:b]), labels=labels)
    return ImageSource(label=str(path), n=n, read=_GzipReader(path, offset, n, (h, w)), labels=labels)


class _GzipReader:
    """Reads a gzip IDX file front to back, one batch at a time (reopens when asked to go back)."""

    def __init__(self, path: Path, offset: int, n: int, side: tuple[int, int]):
        self.path, self.offset, self.n, self.side = path, offset, n, side
        self.pixels = side[0] * side[1]
        self.fh: Any = None
        self.pos = 0

    def __call__(self, start: int, stop: int) -> np.ndarray:
        if self.fh is None or start < self.pos:
            if self.fh is not None:
                self.fh.close()
            self.fh = gzip.open(self.path, "rb")
            self.fh.read(self.offset)
            self.pos = 0
        try:
            if start > self.pos:
                self.fh.read((start - self.pos) * self.pixels)
            raw = self.fh.read((stop - start) * self.pixels)
        except (OSError, EOFError) as err:
            raise InputError(f"{self.path}: damaged gzip data ({err})") from None
        if len(raw) < (stop - start) * self.pixels:
            raise InputError(f"{self.path}: ends after {start + len(raw) // self.pixels} of {self.n} images; it is "
                             f"truncated")
        self.pos = stop
        if stop >= self.n:
            self.fh.close()
            self.fh = None
        return np.frombuffer(raw, dtype=np.uint8).reshape(stop - start, *self.side)


def _idx_labels(images: Path, n: int) -> np.ndarray | None:
    """Labels from the ``*-labels-idx1-ubyte[.gz]`` file beside an images file, when there is one that fits."""
    name = re.sub(r"images-idx3", "labels-idx1", images.name)
    if name == images.name:
        return None
    for cand in (images.with_name(name), images.with_name(name + ".gz"), images.with_name(name.removesuffix(".gz"))):
        if cand.is_file():
            fh, _ = _open_idx(cand)
            try:
                dims = _idx_header(fh, cand)
                if dims != (n,):
                    return None
                y = np.frombuffer(fh.read(n), dtype=np.uint8)
            except (OSError, EOFError, gzip.BadGzipFile, InputError):
                return None
            finally:
                fh.close()
            return y.astype(np.int64) if len(y) == n else None
    return None


# ------------------------------------------------------------------------------------------ image folders
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _folder_source(folder: Path, resize: bool | str, shape: tuple[int, int, int]) -> ImageSource:
    files = _image_files(folder)
    labels = classes = None
    if not files:
        subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = [(d, _image_files(d)) for d in subdirs]
        per_class = [(d, fs) for d, fs in per_class if fs]
        if per_class:
            classes = tuple(d.name for d, _ in per_class)
            files = [f for _, fs in per_class for f in fs]
            labels = np.concatenate([np.full(len(fs), k, dtype=np.int64) for k, (_, fs) in enumerate(per_class)])
    if not files:
        raise InputError(f"{folder}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    resized, mode = 0, resize if isinstance(resize, str) else "crop"
    _, h, w = shape
    for f in files:  # headers only: size and format, before any work is done (pixels.open_image's checks)
        (fh, fw), _ = image_header(f)
        size = (fw, fh)
        if size != (w, h):
            if not resize:
                raise InputError(f"{f}: image is {size[0]}x{size[1]}, expected {w}x{h}; pass --resize to resize it")
            resized += 1
    if resized:
        warnings.warn(f"{folder}: {resized} of {len(files)} images are not {w}x{h} and are resized to {w}x{h} by "
                      f"{mode}", ResizeWarning, stacklevel=2)
    names = [str(f.relative_to(folder)) for f in files]
    return ImageSource(label=str(folder), n=len(files), read=lambda a, b: _read_images(files[a:b], shape, mode),
                       labels=labels, classes=classes, names=names, resized=resized)


def _read_images(files: list[Path], shape: tuple[int, int, int], mode: str = "crop") -> np.ndarray:
    c, h, w = shape
    out = np.empty((len(files), h, w) if c == 1 else (len(files), c, h, w), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = read_image(f, shape, mode)
    return out
