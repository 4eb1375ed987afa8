"""Array files as a data set: ``--dataset npz:PATH``, ``npy:PATH`` and ``idx:PREFIX``, read and checked.

- ``npz:PATH``: a NumPy ``.npz`` holding ``x`` (the images) and optionally ``y`` (one label per image, integers
  or strings), ``classes`` (the class names, indexed by the integer labels), ``x_test`` and ``y_test`` (the test
  split).
- ``npy:PATH``: a NumPy ``.npy`` holding the images only (one class).
- ``idx:PREFIX``: IDX files as the built-in data sets ship them (KMNIST, EMNIST, ...), gzip or raw: PREFIX is a
  folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``
  and ``t10k-labels-idx1-ubyte[.gz]`` (``test-`` instead of ``t10k-`` works too), or the start of such file
  names (``idx:emnist/emnist-digits`` reads ``emnist/emnist-digits-train-images-idx3-ubyte.gz``, ...). Only the
  training images are required; the labels and the test files are used when present.

Images are (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3 (channels last wins when both read), uint8
0..255 (or any integer type in that range) or float in [0, 1]; they become uint8 (N, C, H, W). Every problem is
a ``DataError`` naming the file, the array and the fix.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aelab.data.idx import parse_idx
from aelab.errors import DataError

NPZ_KEYS = ("x", "y", "classes", "x_test", "y_test")
IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SHAPES = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3"


@dataclass
class ArraySet:
    """Images (uint8 (n, C, H, W)), labels (int64 (n,)) and class names of a file, train and test."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    files: tuple[Path, ...] = ()


# ------------------------------------------------------------------------------------------ sizes
def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the arrays of a ``.npz``, from their headers (nothing is read)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                with z.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape = read(fh)[0]
                out[name.removesuffix(".npy")] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({str(err)[:80]}); save it with numpy.savez") from None
    return out


def header_count(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 0


# ------------------------------------------------------------------------------------------ images and labels
def to_nchw(x: np.ndarray, label: str) -> np.ndarray:
    """Images of any accepted layout and type -> uint8 (n, C, H, W); ``DataError`` naming ``label`` otherwise."""
    if x.dtype.kind not in "uifb":
        raise DataError(f"{label} holds {x.dtype} values; give uint8 0..255 or float 0..1 pixels")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.moveaxis(x, -1, 1)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        hint = f"; e.g. x.reshape(-1, {int(np.sqrt(x.shape[1]))}, {int(np.sqrt(x.shape[1]))})" \
            if x.ndim == 2 and np.sqrt(x.shape[1]).is_integer() else ""
        raise DataError(f"{label} has shape {x.shape} (rank {x.ndim}); give images as {SHAPES}{hint}")
    if len(x) == 0:
        raise DataError(f"{label} holds no images; give at least one")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "b":
        return np.ascontiguousarray(x.astype(np.uint8) * 255)
    if x.dtype.kind in "iu":
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{label} holds integers from {x.min()} to {x.max()}; give pixels 0..255 (or float 0..1)")
        return np.ascontiguousarray(x.astype(np.uint8))
    if not np.isfinite(x).all():
        raise DataError(f"{label} holds NaN or infinite values; remove or fix those images")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        fix = "divide by 255" if 0 <= lo and hi <= 255 else "scale them to [0, 1]"
        raise DataError(f"{label} holds floats from {lo:.3g} to {hi:.3g}, expected pixels in [0, 1]; {fix}")
    return np.ascontiguousarray(np.clip(np.rint(x.astype(np.float32) * 255.0), 0, 255).astype(np.uint8))


def to_labels(y: np.ndarray | None, n: int, label: str, classes: tuple[str, ...] | None
              ) -> tuple[np.ndarray, tuple[str, ...]]:
    """(int64 labels, class names) of ``y`` for ``n`` images: integer labels index ``classes`` (default: the
    numbers), string labels name them; no ``y``: one class."""
    if y is None:
        return np.zeros(n, dtype=np.int64), classes or ("all",)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{label} holds {y.shape[0] if y.ndim else 0} labels of shape {y.shape} for {n} images; give "
                        f"one label per image, shape ({n},)")
    if y.dtype.kind in "US":
        names = tuple(str(c) for c in np.unique(y)) if classes is None else classes
        index = {c: k for k, c in enumerate(names)}
        missing = [str(v) for v in np.unique(y) if str(v) not in index]
        if missing:
            raise DataError(f"{label}: label {missing[0]!r} is not one of the classes; add it to classes")
        return np.array([index[str(v)] for v in y], dtype=np.int64), names
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{label} holds {y.dtype} labels; give integers (class indices) or strings (class names)")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{label} holds the negative label {y.min()}; give class indices from 0")
    top = int(y.max()) + 1 if len(y) else 1
    names = classes or tuple(str(k) for k in range(top))
    if top > len(names):
        raise DataError(f"{label} holds label {top - 1} but only {len(names)} class names are given; give one name "
                        f"per class index")
    return y, names


# ------------------------------------------------------------------------------------------ the files
def read_npz(path: Path) -> ArraySet:
    shapes = npz_shapes(path)
    if "x" not in shapes:
        raise DataError(f"{path}: no array 'x' (it holds {', '.join(shapes) or 'nothing'}); save the images as x "
                        f"(numpy.savez(path, x=images, y=labels))")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in NPZ_KEYS if k in shapes}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: cannot be read ({str(err)[:80]}); save it again with numpy.savez") from None
    classes = tuple(str(c) for c in arrays["classes"].reshape(-1)) if "classes" in arrays else None
    x = to_nchw(arrays["x"], f"{path}: x")
    y, classes = to_labels(arrays.get("y"), len(x), f"{path}: y", classes)
    if ("x_test" in arrays) != ("y_test" in arrays) and "y" in arrays:
        raise DataError(f"{path}: has {'x_test' if 'x_test' in arrays else 'y_test'} without "
                        f"{'y_test' if 'x_test' in arrays else 'x_test'}; give both or neither")
    if "x_test" not in arrays:
        return ArraySet(x, y, classes, files=(path,))
    x_test = to_nchw(arrays["x_test"], f"{path}: x_test")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_test images are {x_test.shape[1:]} (C, H, W) but x images {x.shape[1:]}; give "
                        f"both splits the same image shape")
    y_test, _ = to_labels(arrays.get("y_test"), len(x_test), f"{path}: y_test", classes)
    return ArraySet(x, y, classes, x_test, y_test, files=(path,))


def read_npy(path: Path) -> ArraySet:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:80]}); save it with "
                        f"numpy.save") from None
    x = to_nchw(x, str(path))
    y, classes = to_labels(None, len(x), str(path), None)
    return ArraySet(x, y, classes, files=(path,))


def idx_files(prefix: Path) -> dict[str, Path]:
    """{"train-images": path, ...} of the IDX files found for ``prefix`` (see the module docstring)."""
    found = {}
    for split, (images, labels) in IDX_STEMS.items():
        for kind, stem in (("images", images), ("labels", labels)):
            stems = [stem] + ([stem.replace("t10k-", "test-")] if split == "test" else [])
            names = [s + ext for s in stems for ext in (".gz", "")]
            cands = [prefix / n for n in names] if prefix.is_dir() else [prefix.with_name(f"{prefix.name}-{n}")
                                                                          for n in names]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is not None:
                found[f"{split}-{kind}"] = hit
    if "train-images" not in found:
        where = f"in {prefix}" if prefix.is_dir() else f"named {prefix.name}-train-images-idx3-ubyte[.gz] in " \
                                                        f"{prefix.parent}"
        raise DataError(f"idx:{prefix}: no train-images-idx3-ubyte[.gz] file {where}; give the folder of the IDX "
                        f"files, or the start of their names")
    return found


def read_idx_file(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is truncated or damaged ({err}); fetch it again") from None
    return parse_idx(raw, str(path), any_size=True)


def read_idx_set(prefix: Path) -> ArraySet:
    files = idx_files(prefix)
    arrays = {k: read_idx_file(p) for k, p in files.items()}
    for split in ("train", "test"):
        if f"{split}-images" in arrays and arrays[f"{split}-images"].ndim != 3:
            raise DataError(f"{files[f'{split}-images']}: an IDX label file, not images; give the images file")
    x = to_nchw(arrays["train-images"], str(files["train-images"]))
    y, classes = to_labels(arrays.get("train-labels"), len(x), str(files.get("train-labels")), None)
    if "test-images" not in arrays:
        return ArraySet(x, y, classes, files=tuple(files.values()))
    x_test = to_nchw(arrays["test-images"], str(files["test-images"]))
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{files['test-images']}: images of {x_test.shape[2:]} but the training images are "
                        f"{x.shape[2:]}; give test images of the same size")
    test_y = arrays.get("test-labels") if "train-labels" in arrays else None
    y_test, _ = to_labels(test_y, len(x_test), str(files.get("test-labels")), classes)
    return ArraySet(x, y, classes, x_test, y_test, files=tuple(files.values()))
