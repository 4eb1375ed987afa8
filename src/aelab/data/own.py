"""The user's own images as a data set: ``--dataset folder:PATH``, ``npz:PATH``, ``npy:PATH``, ``idx:PREFIX``.

``load_own(spec, image_size=..., channels=..., test_fraction=...)`` gives the source's images as uint8
(n, C, H, W) arrays, train and test, with labels, class names and fingerprints; ``datasets.load_dataset`` makes
the usual ``DataBundle`` of them (validation split, class subsets, limits).

- **Shape.** Without ``image_size`` every image keeps its size (all must agree); with it (N, (H, W) or a
  ``resize.Target``), each is resized to it by ``resize``: crop (the default: scaled to cover, the centre cut
  out), pad (scaled to fit, black bars) or stretch (``data.resize.fit``, Lanczos). ``channels`` 1 makes colour grey
  (ITU-R 601 luma, as Pillow), 3 repeats grey into RGB; by default grey data stays grey and colour stays RGB.
- **Test split.** A folder's ``test/`` sub-folder, a ``.npz``'s ``x_test`` / ``y_test``, IDX ``t10k-`` files;
  otherwise ``test_fraction`` of the images, drawn with a fixed seed (the same test set for every run).
- **Cache.** An image folder is decoded once into ``PATH/.aelab-cache/<options>.npz`` (uint8 arrays and a
  description), keyed by every file's name, size, modification time, inode change time and inode
  (``folders.file_stamp``) and by the options; a change to any file rebuilds it, also one that keeps the size
  and puts the modification time back. Written to a temporary file and renamed, so it is never half-written; a
  folder that cannot be written keeps its cache in the user cache (``~/.cache/aelab/own/``). Array files are
  read as they are (they hold decoded pixels already).
- **Memory.** A data set whose uint8 pixels would not fit in the memory available now is refused, naming the
  size, before anything is decoded, unless it is read from disk (the next point); an array file is counted as it is
  stored (its headers' shapes and types) plus its conversion, and ``conform`` counts its own copies (the other
  channels, the resized images) before it makes them.
- **From disk.** A folder or a uint8 ``.npy`` whose pixels exceed a quarter of the memory available (or any,
  with ``AELAB_STREAM=1``) is read from disk batch by batch (``data.stream``): the ``.npy`` read in place as it is,
  the folder decoded on every core into a cache of ``.npy`` shards (``PATH/.aelab-cache/<options>.shards/``,
  ``data.shards``) after checking the disk's free space. The splits then hold an ``ImageStore``, not a tensor.
- **Size.** Images smaller than ``MIN_SIDE`` pixels on a side are refused: SSIM's smallest window is 3x3.
- **Fingerprints.** ``files`` (names, sizes, times: the cache key) and ``content`` (sha256 of the decoded pixels,
  labels and class names): a run records both, and ``aelab evaluate`` warns when the content changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aelab.data import arrays, folders, shards
from aelab.data.idx import cache_dir
from aelab.data.pixels import pil_to_array, shape_text
from aelab.data.resize import Target, target
from aelab.data.stream import (  # available_memory, size_text: owned there, used here too
    ImageStore,
    available_memory,
    digest_parts,
    forced,
    layout_of,
    open_npy,
    size_text,
    wanted,
)
from aelab.errors import DataError, OutputError
from aelab.files import atomic_write_with

KINDS = ("folder", "npz", "npy", "idx")
CACHE_FOLDER = ".aelab-cache"
CACHE_FORMAT = "aelab-own-cache-1"
TEST_SEED = 0  # the seeded test split of a source without one: the same images for every run


@dataclass
class OwnData:
    """A source's images, decoded: uint8 (n, C, H, W), labels int64, class names, where from, fingerprints."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    source: str
    files_key: str
    content: str
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


MIN_TRAIN = 10  # kNN-5 needs 5 training codes, and a validation split is carved from the training images
MIN_TEST = 11   # trustworthiness with 5 neighbours needs more than 10 test images
MIN_SIDE = 3    # SSIM's smallest window (evaluation.metrics.ssim_window): a 1- or 2-pixel side leaves one tap


def parse_spec(spec: str) -> tuple[str, Path]:
    kind, sep, path = str(spec).partition(":")
    if not sep or kind not in KINDS or not path:
        raise DataError(f"unknown data source {spec!r}; give folder:PATH, npz:PATH, npy:PATH or idx:PREFIX")
    return kind, Path(path).expanduser()


def is_own(spec: str) -> bool:
    kind, sep, _ = str(spec).partition(":")
    return bool(sep) and kind in KINDS


# ------------------------------------------------------------------------------------------ memory
def check_memory(label: str, n: int, need: int, what: str, fix: str, how: str = "as uint8") -> None:
    """``DataError`` naming the size when ``need`` bytes (``n`` images, ``what``) exceed the memory available."""
    free = available_memory()
    if need > free:
        raise DataError(f"{label}: {n:,} images{what} need {size_text(need)} of memory {how}, more than the "
                        f"{size_text(free)} available; {fix} (image folders and uint8 .npy files are read from disk "
                        f"batch by batch instead unless AELAB_STREAM=0)")


def check_side(label: str, size: tuple[int, int], image_size: Target | None) -> None:
    """``DataError`` when images of ``size`` (H, W) are smaller than ``MIN_SIDE`` on a side."""
    if min(size) < MIN_SIDE:
        fix = f"give --image-size {MIN_SIDE} or more" if image_size is not None else \
            f"give larger images, or --image-size {MIN_SIDE} or more to resize them"
        raise DataError(f"{label}: images of {size[1]}x{size[0]} pixels, but aelab needs at least {MIN_SIDE} pixels "
                        f"a side (SSIM's smallest window is {MIN_SIDE}x{MIN_SIDE}); {fix}")


# ------------------------------------------------------------------------------------------ conversions
def conform_bytes(shape: tuple[int, int, int, int], channels: int | None, image_size: Target | None) -> int:
    """Bytes ``conform`` allocates for images of ``shape`` (n, C, H, W): the other channels, the resized copy."""
    n, c, h, w = shape
    out_c = channels or c
    need = n * out_c * h * w if out_c != c else 0
    if image_size is not None and (h, w) != image_size.size:
        need += n * out_c * image_size.h * image_size.w
    return need


def conform(x: np.ndarray, channels: int | None, image_size: Target | None, label: str, progress: bool = True
            ) -> np.ndarray:
    """uint8 (n, C, H, W) -> the asked channels and size (see the module docstring); ``DataError`` before any
    copy when the copies would not fit in the memory available."""
    c = x.shape[1]
    need = conform_bytes(x.shape, channels, image_size)
    if need:
        side = image_size.size if image_size is not None else x.shape[2:]
        check_memory(label, len(x), need, f" converted to {shape_text((channels or c, *side))}",
                     "give a smaller --image-size, or fewer images")
    if channels == 3 and c == 1:
        x = np.repeat(x, 3, axis=1)
    elif channels == 1 and c == 3:  # ITU-R 601 luma in Pillow's integer arithmetic: the same as Image.convert("L")
        r, g, b = (x[:, i].astype(np.uint32) for i in range(3))
        x = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[:, None]
    if image_size is None or x.shape[2:] == image_size.size:
        return np.ascontiguousarray(x)
    from PIL import Image

    out = np.empty((len(x), x.shape[1], *image_size.size), dtype=np.uint8)
    for i in tqdm(range(len(x)), desc=f"resize {Path(label).name}", unit="img", disable=None if progress else True,
                  leave=False):
        im = Image.fromarray(x[i, 0] if x.shape[1] == 1 else np.moveaxis(x[i], 0, -1))
        a = pil_to_array(im, x.shape[1], image_size.size, image_size.mode)
        out[i] = a[None] if x.shape[1] == 1 else np.moveaxis(a, -1, 0)
    return out


def content_digest(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   classes: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for a in (x, y, x_test, y_test):
        for part in digest_parts(a):  # a store read from disk (data.stream): chunk by chunk, the same digest
            h.update(part)
    h.update("\n".join(classes).encode())
    return h.hexdigest()


def seeded_test_split(n: int, fraction: float, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: ``fraction`` of ``n`` images (at least one) as the test split, fixed seed."""
    if n < 2:
        raise DataError(f"{label}: holds {n} image; give at least 2 (a training and a test image)")
    perm = np.random.default_rng(TEST_SEED).permutation(n)
    k = min(n - 1, max(1, int(round(n * fraction))))
    return np.sort(perm[k:]), np.sort(perm[:k])


# ------------------------------------------------------------------------------------------ the cache
def _cache_paths(root: Path, tag: str) -> list[Path]:
    """Where a folder's decoded cache lives: beside the data, else in the user cache."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / CACHE_FOLDER / f"{tag}.npz", cache_dir() / "own" / digest / f"{tag}.npz"]


def read_cache(path: Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, description) of a cache file made for ``key``; None when missing, of another key, or damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return None
            return {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}, meta
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None  # a damaged cache is rebuilt, never trusted


def write_cache(paths: list[Path], data: dict[str, np.ndarray], meta: dict[str, Any]) -> Path | None:
    """Write the cache to the first of ``paths`` that can be written (atomically); None when none can."""
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return atomic_write_with(path, lambda fh: np.savez(fh, meta=np.array(json.dumps(meta)), **data))
        except (OSError, OutputError):
            continue
    return None


# ------------------------------------------------------------------------------------------ the sources
def _load_folder(root: Path, image_size: Target | None, channels: int | None, test_fraction: float, progress: bool,
                 stream: bool | None = None) -> OwnData:
    layout = folders.scan(root)
    split = "test/" if layout.test is not None else f"fraction {test_fraction:g}"
    options = f"|size={image_size}|channels={channels}|test={split}|{CACHE_FORMAT}"
    key = hashlib.sha256((folders.files_key(layout) + options).encode()).hexdigest()
    tag = f"{'s' + str(image_size) if image_size else 'own'}-{'c' + str(channels) if channels else 'auto'}"
    paths = _cache_paths(root, tag)
    shard_dirs = [p.with_suffix(".shards") for p in paths]
    for path in paths if forced(stream) is not True else ():
        hit = read_cache(path, key)
        if hit is not None:
            a, meta = hit
            return OwnData(a["train_x"], a["train_y"], a["test_x"], a["test_y"], tuple(meta["classes"]), str(root),
                           key, meta["content"], [f"decoded images read from the cache {path}"])
    for folder in shard_dirs:  # decoded earlier into shards, to be read from disk (data.shards)
        cached = shards.open_cache(folder, key)
        if isinstance(cached, shards.ShardCache):
            return _from_shards(cached, str(root), key, stream)
    size, found = folders.inspect(layout.files, image_size and image_size.size)
    check_side(str(root), size, image_size)
    c = channels or found
    shape = (c, *size)
    if wanted(len(layout.files) * int(np.prod(shape)), stream):
        return _build_shards(layout, shards.cache_folder(shard_dirs), key, shape, test_fraction, progress, stream,
                             image_size.mode if image_size else "crop")
    check_memory(str(root), len(layout.files), len(layout.files) * int(np.prod(shape)), f" of {shape_text(shape)}",
                 "give a smaller --image-size, or fewer images")
    x = shards.decode_all(layout.files, c, size, progress, desc=f"decode {root.name}",  # on every core
                          resize=image_size.mode if image_size else "crop")
    n = len(layout.train)
    train_x, test_x = x[:n], x[n:]
    train_y, test_y = layout.train_labels, layout.test_labels
    notes = [f"{len(x):,} images decoded from {root}"]
    if layout.test is None:
        tr, te = seeded_test_split(n, test_fraction, str(root))
        train_x, test_x, train_y, test_y = train_x[tr], train_x[te], train_y[tr], train_y[te]
        notes.append(f"test split: {len(te):,} of {n:,} images ({test_fraction:g}, seed {TEST_SEED})")
    assert test_y is not None
    content = content_digest(train_x, train_y, test_x, test_y, layout.classes)
    meta = {"format": CACHE_FORMAT, "key": key, "content": content, "classes": list(layout.classes),
            "source": str(root)}
    written = write_cache(paths, dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y), meta)
    notes.append(f"cached in {written}" if written else "no cache written (no folder could be written)")
    return OwnData(train_x, train_y, test_x, test_y, layout.classes, str(root), key, content, notes)


def _build_shards(layout: folders.FolderLayout, folder: Path, key: str, shape: tuple[int, int, int],
                  test_fraction: float, progress: bool, stream: bool | None, resize: str = "crop") -> OwnData:
    """A folder decoded into a cache of shards on disk (``data.shards``), read from there batch by batch."""
    train, train_y, test, test_y = layout.train, layout.train_labels, layout.test, layout.test_labels
    notes = []
    if test is None or test_y is None:  # the same seeded split as in memory: the same images, the same digest
        tr, te = seeded_test_split(len(train), test_fraction, str(layout.root))
        train, test, train_y, test_y = [train[i] for i in tr], [train[i] for i in te], train_y[tr], train_y[te]
        notes.append(f"test split: {len(te):,} of {len(train) + len(test):,} images ({test_fraction:g}, seed "
                     f"{TEST_SEED})")
    parts = shards.decode_chunks(train + test, shape[0], shape[1:], progress, desc=f"decode {layout.root.name}",
                                 resize=resize)
    cache = shards.build(folder, key, str(layout.root), parts, train_y, test_y, layout.classes, shape,
                         content_digest)
    data = _from_shards(cache, str(layout.root), key, stream)
    data.notes += notes
    return data


def _from_shards(cache: shards.ShardCache, source: str, key: str, stream: bool | None) -> OwnData:
    """A shard cache as a data set: read from disk, or read into memory when it is small enough now."""
    train_x: np.ndarray | ImageStore = cache.train
    test_x: np.ndarray | ImageStore = cache.test
    if not wanted(cache.train.nbytes + cache.test.nbytes, stream):
        train_x, test_x = cache.train.take(slice(None)), cache.test.take(slice(None))
    return OwnData(train_x, cache.train_y, test_x, cache.test_y, cache.classes, source, key,  # type: ignore[arg-type]
                   cache.content, list(cache.notes))


def _map_npy(path: Path, image_size: Target | None, channels: int | None, test_fraction: float,
             stream: bool | None, progress: bool = True) -> OwnData | None:
    """A .npy of uint8 images read in place (``data.stream``) when it is to be read from disk; else None
    (read into memory). Other channels or an ``image_size`` convert it once, on every core, into a cache of
    shards beside it (``data.shards``). A file shorter than its header says is a ``DataError`` either way."""
    mapped = open_npy(path, "restore it, or start again on the file as it is now")
    if mapped is None or not wanted(mapped.end - mapped.offset, stream):
        return None
    store = ImageStore([mapped], layout_of(mapped.shape) or "nchw")
    c, h, w = store.image_shape
    check_side(str(path), image_size.size if image_size else (h, w), image_size)
    (y,), classes = arrays.to_labels([(None, len(store), str(path))], None)  # one class, as read_npy
    tr, te = seeded_test_split(len(store), test_fraction, str(path))
    notes = [f"test split: {len(te):,} of {len(store):,} images ({test_fraction:g}, seed {TEST_SEED})"]
    key = hashlib.sha256(f"{path.resolve()}|{folders.file_stamp(path)}\n".encode()).hexdigest()
    shape = (channels or c, *(image_size.size if image_size else (h, w)))
    if shape == (c, h, w):
        x, x_test = store.subset(tr), store.subset(te)
        content = shards.remembered_digest(f"{key}|test={test_fraction}", lambda: content_digest(
            x, y[tr], x_test, y[te], classes))  # type: ignore[arg-type]
        return OwnData(x, y[tr], x_test, y[te], classes, str(path), key, content,  # type: ignore[arg-type]
                       [f"read from disk batch by batch: {path}", *notes])
    ckey = hashlib.sha256(f"{key}|size={image_size}|channels={channels}|test={test_fraction}".encode()).hexdigest()
    dirs = [p.with_suffix(".shards") for p in _cache_paths(path.parent, f"{path.stem}-s{image_size}-c{channels}")]
    for folder in dirs:
        cached = shards.open_cache(folder, ckey)
        if isinstance(cached, shards.ShardCache):
            return _from_shards(cached, str(path), key, stream)
    rows, step = np.concatenate([tr, te]), shards.chunk_size(c * h * w)
    convert = functools.partial(_converted, channels=channels, image_size=image_size, label=str(path))
    parts = shards.ordered_map(convert, [store.subset(rows[i:i + step]) for i in range(0, len(rows), step)],
                               progress, desc=f"convert {path.name}")
    cache = shards.build(shards.cache_folder(dirs), ckey, str(path), parts, y[tr], y[te], classes, shape,
                         content_digest)
    data = _from_shards(cache, str(path), key, stream)
    data.notes += notes
    return data


def _converted(images: ImageStore, channels: int | None, image_size: Target | None, label: str) -> np.ndarray:
    """``conform`` on a few images read from disk: a task of ``shards.ordered_map``."""
    return conform(images.take(slice(None)), channels, image_size, label, progress=False)


def _array_headers(kind: str, path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} of what an array source holds, from its headers only (nothing is read)."""
    if kind == "npz":
        return {k: v for k, v in arrays.npz_headers(path).items() if k in arrays.NPZ_KEYS}
    if kind == "idx":
        return {k: (arrays.idx_dims(f), np.dtype(np.uint8)) for k, f in arrays.idx_files(path).items()}
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:80]}); save it with "
                        f"numpy.save") from None
    return {"x": (tuple(x.shape), x.dtype)}


def _check_array_memory(kind: str, path: Path, channels: int | None, image_size: Target | None) -> None:
    """Refuse, before reading, an array source whose reading and conversion would not fit in memory."""
    headers = _array_headers(kind, path)
    images = {k: v for k, v in headers.items() if k in ("x", "x_test", "train-images", "test-images")}
    need = sum(arrays.read_bytes(shape, dtype) if k in images else arrays.header_count(shape) * dtype.itemsize
               for k, (shape, dtype) in headers.items())
    n = 0
    for shape, _ in images.values():
        nchw = arrays.nchw_shape(shape)
        n += shape[0] if shape else 0
        need += conform_bytes(nchw, channels, image_size) if nchw is not None else 0
    check_memory(str(path), n, need, "", "save fewer images in it" + (", or give a smaller --image-size"
                                                                       if image_size else ""),
                 "to be read and converted to uint8")


def _load_arrays(kind: str, path: Path, image_size: Target | None, channels: int | None, test_fraction: float,
                 progress: bool, stream: bool | None = None) -> OwnData:
    if kind in ("npz", "npy") and not path.is_file():
        raise DataError(f"{path}: no such file; give --dataset {kind}:PATH with the path of a .{kind} file")
    mapped = _map_npy(path, image_size, channels, test_fraction, stream, progress) if kind == "npy" else None
    if mapped is not None:
        return mapped
    _check_array_memory(kind, path, channels, image_size)
    data = {"npz": arrays.read_npz, "npy": arrays.read_npy, "idx": arrays.read_idx_set}[kind](path)
    label = str(path)
    check_side(label, image_size.size if image_size else data.x.shape[2:], image_size)
    x = conform(data.x, channels, image_size, label, progress)
    notes = []
    if data.x_test is None:
        tr, te = seeded_test_split(len(x), test_fraction, label)
        x, x_test, y, y_test = x[tr], x[te], data.y[tr], data.y[te]
        notes.append(f"test split: {len(te):,} of {len(tr) + len(te):,} images ({test_fraction:g}, seed {TEST_SEED})")
    else:
        x_test, y, y_test = conform(data.x_test, channels, image_size, label, progress), data.y, data.y_test
    assert y_test is not None
    h = hashlib.sha256()
    for f in data.files:
        h.update(f"{f.resolve()}|{folders.file_stamp(f)}\n".encode())
    content = content_digest(x, y, x_test, y_test, data.classes)
    return OwnData(x, y, x_test, y_test, data.classes, label, h.hexdigest(), content, notes)


def load_own(spec: str, *, image_size: int | tuple[int, int] | Target | None = None, channels: int | None = None,
             test_fraction: float = 0.2, progress: bool = True, stream: bool | None = None, resize: str = "crop"
             ) -> OwnData:
    """The images of ``spec`` (``folder:PATH``, ``npz:PATH``, ``npy:PATH``, ``idx:PREFIX``), decoded, at
    ``image_size`` by ``resize`` (``data.resize``); ``stream``: read from disk batch by batch (True), into memory
    (False), or by their size (None: ``data.stream``)."""
    kind, path, image_size = *parse_spec(spec), target(image_size, resize)
    if kind == "folder":
        data = _load_folder(path, image_size, channels, test_fraction, progress, stream)
    else:
        data = _load_arrays(kind, path, image_size, channels, test_fraction, progress, stream)
    if channels is not None and data.shape[0] != channels:  # a cache made with other options cannot get here
        raise DataError(f"{spec}: images of {data.shape[0]} channels after conversion to {channels}; report this")
    return data


def check_enough(spec: str, train: int, test: int, test_fraction: float) -> None:
    """Refuse, before any training, an own data set too small for the latent metrics every run reports."""
    if test < MIN_TEST or train < MIN_TRAIN:
        raise DataError(f"{spec}: {train:,} training and {test:,} test images; aelab needs at least {MIN_TRAIN} "
                        f"and {MIN_TEST} (kNN-5 accuracy and trustworthiness compare 5 neighbours); give more images, "
                        f"or a larger --test-fraction (now {test_fraction:g}) when the test split is drawn")
