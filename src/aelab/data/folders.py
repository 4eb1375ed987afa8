"""Image folders as a data set (``--dataset folder:PATH``): the layout scanned and checked, the images decoded.

The layout is torchvision's ImageFolder: one sub-folder per class, its images inside (sub-folders of a class
folder belong to that class); a folder that holds images and no class folders is one class, named ``all``.
A sub-folder named ``test`` (same layout) is the test split; when there is one, a sibling ``train`` folder (if
any) is the training split, else every other class folder is; a ``train`` folder alone is the training split.
Files and folders whose names start with a dot are skipped (the decoded cache lives in ``.aelab-cache``);
files of other types are skipped too. Images are read with Pillow: PNG, JPEG, BMP, TIFF (and GIF, first frame).

``scan`` finds the files without opening them; ``files_key`` fingerprints them by name, size, modification time,
inode change time and inode (the key of the decoded cache: ``file_stamp``); ``inspect`` reads only their headers
(size and colour mode) to check that the sizes agree and to pick the channels; ``decode`` reads the pixels into
one uint8 array, with a progress bar. Every file is opened by ``pixels.open_image`` (the one place that turns
Pillow's failures, decompression bombs included, into one line). Every problem is a ``DataError`` naming the
file and the fix.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aelab.data.pixels import IMAGE_SUFFIXES, image_header, is_grey_mode, read_image
from aelab.errors import DataError

FLAT_CLASS = "all"  # the one class of a folder without class folders
TEST_FOLDER, TRAIN_FOLDER = "test", "train"


@dataclass
class FolderLayout:
    """The image files of a folder data set and their labels (indices into ``classes``)."""

    root: Path
    classes: tuple[str, ...]
    train: list[Path]
    train_labels: np.ndarray
    test: list[Path] | None = None
    test_labels: np.ndarray | None = None

    @property
    def files(self) -> list[Path]:
        return self.train + (self.test or [])


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p)
                  and all(_visible(q) for q in p.relative_to(folder).parents if str(q) != "."))


def _tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """{class name: its image files} of one split's folder."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give --dataset folder:PATH with PATH a folder of images")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p) and p.name not in skip)
    loose = _images_in(folder, recursive=False)
    if loose and subdirs:
        raise DataError(f"{folder}: holds images ({loose[0].name}, ...) beside class folders ({subdirs[0].name}, "
                        f"...); move the images into a class folder, or the class folders out")
    if loose:
        return {FLAT_CLASS: loose}
    if not subdirs:
        raise DataError(f"{folder}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)}); put the "
                        f"images in it, one sub-folder per class")
    tree = {}
    for d in subdirs:
        files = _images_in(d, recursive=True)
        if not files:
            raise DataError(f"{d}: empty class folder (no {', '.join(IMAGE_SUFFIXES)} images); put its images in "
                            f"it or remove it")
        tree[d.name] = files
    return tree


def _flatten(tree: dict[str, list[Path]], classes: tuple[str, ...]) -> tuple[list[Path], np.ndarray]:
    index = {c: k for k, c in enumerate(classes)}
    files = [f for c in tree for f in tree[c]]
    labels = np.concatenate([np.full(len(tree[c]), index[c], dtype=np.int64) for c in tree])
    return files, labels


def scan(root: str | os.PathLike) -> FolderLayout:
    """The layout of an image folder (see the module docstring), without opening a file."""
    root = Path(root)
    test_dir, train_dir = root / TEST_FOLDER, root / TRAIN_FOLDER
    if test_dir.is_dir():
        train_tree = _tree(train_dir) if train_dir.is_dir() else _tree(root, skip=(TEST_FOLDER,))
        test_tree = _tree(test_dir)
        classes = tuple(train_tree)
        unknown = [c for c in test_tree if c not in train_tree]
        if unknown:
            raise DataError(f"{test_dir / unknown[0]}: a test class without training images (the training classes: "
                            f"{', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); give it training "
                            f"images or remove it")
        train, train_labels = _flatten(train_tree, classes)
        test, test_labels = _flatten(test_tree, classes)
        return FolderLayout(root, classes, train, train_labels, test, test_labels)
    tree = _tree(train_dir if train_dir.is_dir() else root)
    classes = tuple(tree)
    train, train_labels = _flatten(tree, classes)
    return FolderLayout(root, classes, train, train_labels)


def file_stamp(path: Path) -> str:
    """What says a file is unchanged without reading it: size, modification time, inode change time and inode.

    A rewrite that keeps the size and puts the modification time back (``touch -d``, ``os.utime``, a copy with
    ``cp -p``, an editor that restores it) still moves the inode change time (``st_ctime_ns``, which no user
    can set) or makes a new inode. Not caught: a change made by writing the disk under the file system, or a
    clock set back to the very nanosecond; and Windows, whose ``st_ctime`` is the creation time. A ``chmod`` or
    a ``mv`` also moves the change time: the cache is then rebuilt although the pixels did not change.
    """
    st = path.stat()
    return f"{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def files_key(layout: FolderLayout) -> str:
    """sha256 over every file's path (relative to the root) and ``file_stamp``, and the labels."""
    h = hashlib.sha256()
    for split, files, labels in (("train", layout.train, layout.train_labels),
                                 ("test", layout.test or [], layout.test_labels)):
        h.update(split.encode())
        for f, y in zip(files, labels if labels is not None else [], strict=True):
            h.update(f"{f.relative_to(layout.root)}|{file_stamp(f)}|{y}\n".encode())
    h.update("\n".join(layout.classes).encode())
    return h.hexdigest()


def inspect(files: list[Path], image_size: tuple[int, int] | None) -> tuple[tuple[int, int], int]:
    """((H, W) every image will have, 3 when any image is in colour else 1), from the files' headers only.

    Without ``image_size`` (H, W) every image must have the size of the first one (``DataError`` naming the first
    that differs and the fix, ``--image-size``).
    """
    first: tuple[Path, tuple[int, int]] | None = None
    colour = False
    for f in files:
        size, mode = image_header(f)
        colour = colour or not is_grey_mode(mode)
        if first is None:
            first = (f, size)
        elif size != first[1] and image_size is None:
            raise DataError(f"{f}: image is {size[1]}x{size[0]} but {first[0].name} is {first[1][1]}x{first[1][0]}; "
                            f"give --image-size N or HxW to resize every image to it (--resize: how the aspect fits)")
    assert first is not None
    return (first[1] if image_size is None else image_size), 3 if colour else 1


def decode(files: list[Path], channels: int, size: tuple[int, int], progress: bool = True,
           desc: str = "decode", resize: str = "crop") -> np.ndarray:
    """The pixels of ``files`` as uint8 (n, C, H, W): converted to ``channels``, resized to ``size`` (H, W) by
    ``resize`` when they differ (``data.resize.fit``). A damaged or truncated file is a ``DataError`` naming it."""
    h, w = size
    out = np.empty((len(files), channels, h, w), dtype=np.uint8)
    for i, f in enumerate(tqdm(files, desc=desc, unit="img", disable=None if progress else True, leave=False)):
        out[i] = read_image(f, (channels, h, w), resize)
    return out
