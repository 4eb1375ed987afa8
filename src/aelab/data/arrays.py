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
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from aelab.data.idx import idx_header, parse_idx
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
def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of the arrays of a ``.npz``, from their headers (nothing is read)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                with z.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                out[name.removesuffix(".npy")] = (tuple(int(d) for d in shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, TypeError) as err:
        raise DataError(f"{path}: not a readable .npz file ({str(err)[:80]}); save it with numpy.savez") from None
    return out


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the arrays of a ``.npz``, from their headers (nothing is read)."""
    return {k: shape for k, (shape, _) in npz_headers(path).items()}


def header_count(shape: tuple[int, ...]) -> int:
    """The number of values of an array of ``shape``, exactly (Python integers: a header's numbers can be huge)."""
    return math.prod(shape) if shape else 0


def nchw_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(n, C, H, W) of images stored as ``shape`` in an accepted layout (see the module docstring), else None."""
    if len(shape) == 3:
        return shape[0], 1, shape[1], shape[2]
    if len(shape) == 4 and shape[-1] in (1, 3):
        return shape[0], shape[3], shape[1], shape[2]
    if len(shape) == 4 and shape[1] in (1, 3):
        return shape[0], shape[1], shape[2], shape[3]
    return None


def read_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes that reading images of ``shape`` and ``dtype`` and making them uint8 (n, C, H, W) takes at its peak:
    the array as stored, a float32 working copy for float pixels, the uint8 result and its contiguous copy."""
    count = header_count(shape)
    return count * dtype.itemsize + count * (4 if dtype.kind == "f" else 0) + 2 * count


# ------------------------------------------------------------------------------------------ images and labels
def to_nchw(x: np.ndarray, label: str) -> np.ndarray:
    """Images of any accepted layout and type -> uint8 (n, C, H, W); ``DataError`` naming ``label`` otherwise."""
    if x.dtype.kind not in "uifb":
        raise DataError(f"{label} holds {x.dtype} values; give uint8 0..255 or float 0..1 pixels")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.moveaxis(x, -1, 1)
    elif nchw_shape(x.shape) is None:
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
    f = x.astype(np.float32)  # one working copy, changed in place (``read_bytes`` counts it)
    f *= 255.0
    np.rint(f, out=f)
    np.clip(f, 0, 255, out=f)
    return np.ascontiguousarray(f.astype(np.uint8))


def texts(a: np.ndarray) -> list[str]:
    """Strings of an array of names: str or bytes (decoded as UTF-8), numbers as they print."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in a.reshape(-1).tolist()]


def check_classes(classes: tuple[str, ...], label: str) -> tuple[str, ...]:
    """``classes`` when every name is distinct; ``DataError`` otherwise (two classes of one name would be one in
    the per-class metrics and in ``--classes``)."""
    seen: dict[str, int] = {}
    for k, c in enumerate(classes):
        if c in seen:
            raise DataError(f"{label}: the class name {c!r} is given twice (classes[{seen[c]}] and classes[{k}]); "
                            f"give every class its own name")
        seen[c] = k
    return classes


def _key(v: object) -> int | str:
    """A label value as a class key: strings (bytes decoded as UTF-8) as they are, numbers as Python ints."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v if isinstance(v, str) else int(v)


def _distinct(y: object, n: int, label: str) -> tuple[list[int | str], np.ndarray]:
    """(the distinct label values of ``y`` as keys, sorted; the index of each label among them), ``y`` checked:
    one label per image, strings or integers (floats only when whole numbers)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{label} holds {y.shape[0] if y.ndim else 0} labels of shape {y.shape} for {n} images; give "
                        f"one label per image, shape ({n},)")
    whole = y.dtype.kind == "f" and bool(np.isfinite(y).all()) and bool(np.all(np.mod(y, 1) == 0))
    if y.dtype.kind not in "USiu" and not whole:
        raise DataError(f"{label} holds {y.dtype} labels{' that are not whole numbers' if y.dtype.kind == 'f' else ''}"
                        f"; give integers (class indices) or strings (class names)")
    distinct, inverse = np.unique(y, return_inverse=True)
    return [_key(v) for v in distinct.tolist()], inverse.reshape(-1)


def to_labels(splits: list[tuple[np.ndarray | None, int, str]], classes: tuple[str, ...] | None
              ) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """(int64 labels of each split, class names) of the splits' labels ``(y or None, images, label)``.

    With ``classes`` (the file's names, distinct: ``check_classes``): integer labels index them, string labels
    name them; the names are kept as given. Without: the classes are the distinct label values that occur in any
    split, sorted, each named by its value (integer labels 3 and 1000000 are the classes "3" and "1000000",
    labels 0 and 1), so that what is built and stored grows with the number of classes that occur, never with
    the size of a label. No labels (``y`` of the first split None): one class, every image in it.
    """
    if splits[0][0] is None:
        return [np.zeros(n, dtype=np.int64) for _, n, _ in splits], classes or ("all",)
    found = []
    for y, n, label in splits:
        if y is None:
            raise DataError(f"{label}: no labels for these images, but {splits[0][2]} has labels; give both")
        found.append((*_distinct(y, n, label), label))
    kinds = {isinstance(keys[0], str) for keys, _, _ in found if keys}
    if len(kinds) > 1:
        raise DataError(f"{', '.join(label for _, _, label in found)}: numbers in one, strings in another; give the "
                        f"labels of every split as the same kind")
    if classes is None:
        keys = sorted({k for ks, _, _ in found for k in ks})  # type: ignore[type-var]
        names: tuple[str, ...] = tuple(str(k) for k in keys)
        index: dict[int | str, int] = {k: i for i, k in enumerate(keys)}
    else:
        names, index = classes, {c: i for i, c in enumerate(classes)}
    out = []
    for keys, inverse, label in found:
        if classes is not None and keys and isinstance(keys[0], int):
            bad = [k for k in keys if not 0 <= int(k) < len(classes)]
            if bad:
                raise DataError(f"{label} holds the label {bad[0]} but {len(classes)} class names are given "
                                f"(indices 0 to {len(classes) - 1}); give one name per class index, or leave out "
                                f"classes to name the classes by their labels")
            codes = np.array(keys, dtype=np.int64)
        else:
            missing = [k for k in keys if k not in index]
            if missing:
                raise DataError(f"{label}: label {missing[0]!r} is not one of the classes; add it to classes")
            codes = np.array([index[k] for k in keys], dtype=np.int64)
        out.append(codes[inverse])
    return out, names


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
    classes = check_classes(tuple(texts(arrays["classes"])), f"{path}: classes") if "classes" in arrays else None
    x = to_nchw(arrays["x"], f"{path}: x")
    if ("x_test" in arrays) != ("y_test" in arrays) and "y" in arrays:
        raise DataError(f"{path}: has {'x_test' if 'x_test' in arrays else 'y_test'} without "
                        f"{'y_test' if 'x_test' in arrays else 'x_test'}; give both or neither")
    if "x_test" not in arrays:
        (y,), classes = to_labels([(arrays.get("y"), len(x), f"{path}: y")], classes)
        return ArraySet(x, y, classes, files=(path,))
    x_test = to_nchw(arrays["x_test"], f"{path}: x_test")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_test images are {x_test.shape[1:]} (C, H, W) but x images {x.shape[1:]}; give "
                        f"both splits the same image shape")
    (y, y_test), classes = to_labels([(arrays.get("y"), len(x), f"{path}: y"),
                                      (arrays.get("y_test"), len(x_test), f"{path}: y_test")], classes)
    return ArraySet(x, y, classes, x_test, y_test, files=(path,))


def read_npy(path: Path) -> ArraySet:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:80]}); save it with "
                        f"numpy.save") from None
    x = to_nchw(x, str(path))
    (y,), classes = to_labels([(None, len(x), str(path))], None)
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


def _open_idx(path: Path) -> BinaryIO:
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb")  # type: ignore[return-value]


def idx_dims(path: Path) -> tuple[int, ...]:
    """The dimensions an IDX file's header gives (its first bytes only, decompressed when gzip)."""
    try:
        with _open_idx(path) as fh:
            head = fh.read(16)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is truncated or damaged ({err}); fetch it again") from None
    return idx_header(head, str(path), any_size=True)[0]


def read_idx_file(path: Path) -> np.ndarray:
    """An IDX file, gzip or raw, as uint8; never more bytes read than its header announces (a gzip file that
    expands beyond them is refused without being expanded)."""
    dims = idx_dims(path)
    size = 4 + 4 * len(dims) + header_count(dims)
    try:
        with _open_idx(path) as fh:
            raw = fh.read(size + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is truncated or damaged ({err}); fetch it again") from None
    if len(raw) > size:
        raise DataError(f"{path}: holds more than the {header_count(dims):,} bytes its header announces ({dims}); "
                        f"replace it with a file whose header matches its data")
    return parse_idx(raw, str(path), any_size=True)


def read_idx_set(prefix: Path) -> ArraySet:
    files = idx_files(prefix)
    arrays = {k: read_idx_file(p) for k, p in files.items()}
    for split in ("train", "test"):
        if f"{split}-images" in arrays and arrays[f"{split}-images"].ndim != 3:
            raise DataError(f"{files[f'{split}-images']}: an IDX label file, not images; give the images file")
    x = to_nchw(arrays["train-images"], str(files["train-images"]))
    train = (arrays.get("train-labels"), len(x), str(files.get("train-labels")))
    if "test-images" not in arrays:
        (y,), classes = to_labels([train], None)
        return ArraySet(x, y, classes, files=tuple(files.values()))
    x_test = to_nchw(arrays["test-images"], str(files["test-images"]))
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{files['test-images']}: images of {x_test.shape[2:]} but the training images are "
                        f"{x.shape[2:]}; give test images of the same size")
    test_y = arrays.get("test-labels") if "train-labels" in arrays else None
    if train[0] is not None and test_y is None:
        raise DataError(f"{files['test-images']}: test images without a test labels file beside them (the training "
                        f"images have labels); add t10k-labels-idx1-ubyte[.gz], or remove the test images")
    (y, y_test), classes = to_labels([train, (test_y, len(x_test), str(files.get("test-labels")))], None)
    return ArraySet(x, y, classes, x_test, y_test, files=tuple(files.values()))
