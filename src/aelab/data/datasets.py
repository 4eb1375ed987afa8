"""The data sets: the built-in Fashion-MNIST and MNIST (their four official IDX gzip files: discovery, checksums),
the user's own images (``data.own``), and the splits every data set gets (``load_dataset``).

Discovery order (DESIGN.md): an explicit ``data_dir``, the ``AELAB_DATA_DIR`` environment variable, the user
cache (``~/.cache/aelab``), the Debian package location ``/usr/share/datasets/fashion-mnist``, and last a
download from the official mirrors into the user cache. Every file is checked against the official sha256 of
its *uncompressed* content before use. The built-in data sets live in memory as uint8 tensors; the user's own
images too, unless they are read from disk batch by batch (``data.stream``: a split then holds an ``ImageStore``).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.data.idx import cache_dir, download_file, read_idx
from aelab.data.own import check_side, conform, is_own, load_own
from aelab.data.pixels import SHAPE, as_nchw, image_shape, shape_text
from aelab.data.resize import Target, resize_note, resize_record, target
from aelab.data.stream import ImageStore
from aelab.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    sha256: dict[str, str]  # file stem -> sha256 of the uncompressed IDX content
    mirrors: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "mnist": DatasetInfo(
        name="mnist",
        classes=tuple(str(d) for d in range(10)),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
}

DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


# --------------------------------------------------------------------------------------------- discovery
def _holds_dataset(folder: Path) -> bool:
    return all((folder / f"{stem}.gz").is_file() for stem in FILES)


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``name``, in order. Each root is tried as ``root/<name>`` and as ``root``."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    if os.environ.get("AELAB_DATA_DIR"):
        roots.append(Path(os.environ["AELAB_DATA_DIR"]))
    roots.append(cache_dir())
    out: list[Path] = []
    for root in roots:
        out += [root / name, root]
    if name in DEBIAN_DIRS:
        out.append(DEBIAN_DIRS[name])
    return out


def find_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                 mirrors: Sequence[str] | None = None) -> Path:
    """The folder that holds the four files of ``name``; downloads into the cache when none does.

    An explicit ``data_dir`` is the only place looked at: a folder that lacks a file is an error naming it,
    never a silent fall-back to another copy (the run records the folder it was given).
    """
    info = dataset_info(name)
    if data_dir is not None:
        folders = [Path(data_dir) / name, Path(data_dir)]
        for folder in folders:
            if _holds_dataset(folder):
                return folder
        best = max(folders, key=lambda f: sum((f / f"{stem}.gz").is_file() for stem in FILES))
        missing = next(stem for stem in FILES if not (best / f"{stem}.gz").is_file())
        raise DataError(f"--data-dir {data_dir}: {best} lacks {missing}.gz of {name} (looked in "
                        f"{' and '.join(str(f) for f in folders)}); put the four official IDX .gz files there or "
                        f"drop --data-dir")
    looked = candidate_dirs(name, data_dir)
    for folder in looked:
        if _holds_dataset(folder):
            return folder
    where = ", ".join(str(p) for p in dict.fromkeys(looked))
    if not download:
        raise DataError(f"{name} not found (looked in {where}); set AELAB_DATA_DIR or --data-dir to a folder "
                        f"holding the four IDX .gz files, or allow the download")
    target = cache_dir() / name
    try:
        for stem in FILES:
            dest = target / f"{stem}.gz"
            if not dest.is_file():
                download_file(stem, dest, info.sha256[stem], mirrors or info.mirrors)
    except DataError as err:
        raise DataError(f"{name} not found (looked in {where}) and the download failed: {err}; set "
                        f"AELAB_DATA_DIR or --data-dir to a folder holding the four IDX .gz files") from None
    return target


# --------------------------------------------------------------------------------------------- the data set
@dataclass
class Split:
    # uint8 (n, H, W) grey, (n, C, H, W) colour; (n, 28, 28) for the built-in data sets. A data set read from disk
    # holds an ImageStore (data.stream): store[idx] gathers those images into a tensor of the same layout.
    images: torch.Tensor | ImageStore
    labels: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    """A data set in memory: train, validation and test splits, the class names, the image shape."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    source: str  # the folder (or file) the images came from
    shape: tuple[int, int, int] = SHAPE  # (C, H, W) of every image
    fingerprint: dict[str, str] = field(default_factory=dict)  # "files" (names, sizes, times), "content" (pixels)
    notes: list[str] = field(default_factory=list)  # what loading did (decoded, cached, resized, test split)
    resize: dict[str, Any] | None = None  # --image-size and --resize: {"size": [H, W], "mode", "means"} (data.resize)

    def record(self) -> dict[str, Any]:
        """What a run folder keeps of its data (``data.json``): source, shape, counts, classes, fingerprints, and
        how the images were resized (when they were)."""
        return {"dataset": self.name, "source": self.source, "shape": list(self.shape), "classes": list(self.classes),
                "images": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                "fingerprint": dict(self.fingerprint), "notes": list(self.notes),
                **({"resize": dict(self.resize)} if self.resize else {})}


@functools.lru_cache(maxsize=4)
def _load_raw(name: str, folder: str) -> tuple[np.ndarray, ...]:
    info = dataset_info(name)
    return tuple(read_idx(Path(folder) / f"{stem}.gz", info.sha256[stem]) for stem in FILES)


def load_raw(name: str, data_dir: str | os.PathLike | None = None, download: bool = True
             ) -> tuple[tuple[np.ndarray, ...], Path]:
    """(train_x, train_y, test_x, test_y) as verified uint8 arrays, and the folder they came from."""
    folder = find_dataset(name, data_dir, download=download)
    arrays = _load_raw(name, str(folder.resolve()))
    if arrays[0].shape[0] != arrays[1].shape[0] or arrays[2].shape[0] != arrays[3].shape[0]:
        raise DataError(f"{folder}: image and label counts differ; replace the files with the official ones")
    return arrays, folder


def resolve_classes(classes: Sequence[str | int] | None, names: Sequence[str]) -> list[int] | None:
    """Class names or indices -> sorted indices; ``None`` keeps every class."""
    if not classes:
        return None
    lowered = {n.lower(): i for i, n in enumerate(names)}
    out: set[int] = set()
    for c in classes:
        key = str(c).strip()
        if key.lower() in lowered:
            out.add(lowered[key.lower()])
        elif key.lstrip("-").isdigit() and 0 <= int(key) < len(names):
            out.add(int(key))
        else:
            raise DataError(f"unknown class {c!r}; use a name ({', '.join(names)}) or an index 0-{len(names) - 1}")
    return sorted(out)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index arrays carved from ``n`` training images."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"validation fraction {val_fraction} is outside [0, 1); use e.g. --val-fraction 0.1")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_dataset(name: str = "fashion-mnist", *, data_dir: str | os.PathLike | None = None,
                 val_fraction: float = 0.1, seed: int = 0, classes: Sequence[str | int] | None = None,
                 train_limit: int | None = None, test_limit: int | None = None, download: bool = True,
                 image_size: int | tuple[int, int] | Target | None = None, channels: int | None = None,
                 test_fraction: float = 0.2, progress: bool = True, stream: bool | None = None, resize: str = "crop"
                 ) -> DataBundle:
    """Load, verify and split a data set: a built-in one by name, or the user's own images (``folder:PATH``,
    ``npz:PATH``, ``npy:PATH``, ``idx:PREFIX``: ``data.own``). ``train_limit``/``test_limit`` take a seeded
    slice (for quick runs); ``image_size`` (N or (H, W)), ``resize`` (crop, pad, stretch: ``data.resize``) and
    ``channels`` convert the images (``data.own.conform``). ``stream``:
    the user's own images read from disk batch by batch (True), into memory (False), or by their size (None:
    ``data.stream``, ``AELAB_STREAM``); the built-in data sets are always in memory."""
    notes: list[str] = []
    image_size = target(image_size, resize)
    if is_own(name):
        own = load_own(name, image_size=image_size, channels=channels, test_fraction=test_fraction,
                       progress=progress, stream=stream)
        train_x, train_y, test_x, test_y, names = own.train_x, own.train_y, own.test_x, own.test_y, own.classes
        source, fingerprint, notes = own.source, {"files": own.files_key, "content": own.content}, own.notes
    else:
        info = dataset_info(name)
        (train_x, train_y, test_x, test_y), folder = load_raw(name, data_dir, download)
        names, source = info.classes, str(folder)
        fingerprint = {"content": hashlib.sha256("".join(info.sha256[s] for s in FILES).encode()).hexdigest()}
        if image_size is not None or channels is not None:  # the built-in images converted like the user's own
            check_side(name, image_size.size if image_size else train_x.shape[1:], image_size)
            train_x, test_x = (conform(x[:, None], channels, image_size, name, progress) for x in (train_x, test_x))
            notes.append(f"converted to {shape_text(train_x.shape[1:])}")
    keep = resolve_classes(classes, names)
    if keep is not None:
        m = np.isin(train_y, keep)
        train_x, train_y = _rows(train_x, m), train_y[m]
        m = np.isin(test_y, keep)
        test_x, test_y = _rows(test_x, m), test_y[m]
    tr, va = split_indices(len(train_y), val_fraction, seed)
    if train_limit is not None:
        tr = tr[np.sort(np.random.default_rng(seed + 1).permutation(len(tr))[:train_limit])]
        va = va[: max(1, int(round(train_limit * val_fraction)))] if len(va) else va
    test_idx = np.arange(len(test_y))
    if test_limit is not None:
        test_idx = np.sort(np.random.default_rng(seed + 2).permutation(len(test_y))[:test_limit])
    shape = image_shape(train_x.shape[1:]) if train_x.ndim == 4 else SHAPE

    def split(x: np.ndarray | ImageStore, y: np.ndarray, idx: np.ndarray) -> Split:
        if isinstance(x, ImageStore):  # a view: nothing read
            return Split(x.subset(idx, squeeze=True), torch.from_numpy(y[idx].astype(np.int64)))
        x = x[idx]
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]  # grey images stay (n, H, W), as the built-in ones
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y[idx].astype(np.int64)))

    return DataBundle(name=name, classes=tuple(names), train=split(train_x, train_y, tr),
                      val=split(train_x, train_y, va), test=split(test_x, test_y, test_idx), source=source,
                      shape=shape, fingerprint=fingerprint, notes=[*notes, *filter(None, [resize_note(image_size)])],
                      resize=resize_record(image_size))


def _rows(x: np.ndarray | ImageStore, keep: np.ndarray) -> np.ndarray | ImageStore:
    return x.subset(keep) if isinstance(x, ImageStore) else x[keep]


def to_float(images: torch.Tensor | ImageStore) -> torch.Tensor:
    """uint8 (n, H, W) or (n, C, H, W) -> float32 (n, C, H, W) in [0, 1] (C = 1 for grey). A store (``data.stream``)
    is read whole: pass it a batch (``store[i:j]``) instead."""
    if isinstance(images, ImageStore):
        images = images[:]
    return as_nchw(images).to(torch.float32).div_(255.0)
