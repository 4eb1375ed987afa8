"""Images larger than memory: uint8 images read batch by batch, in place, from ``.npy`` files on disk.

A data set whose uint8 pixels exceed ``STREAM_FRACTION`` of the memory available when it is loaded (or any data
set, with ``AELAB_STREAM=1`` or ``load_dataset(..., stream=True)``; ``AELAB_STREAM=0`` or ``stream=False``
never) is not read into memory: its splits hold an ``ImageStore`` instead of a tensor. What is read in place:

- an ``npy:`` file of uint8 images, as it is (no copy), in any layout the loader accepts: (N, H, W),
  (N, H, W, C) or (N, C, H, W), turned into the model's (n, C, H, W) per batch; other types are read into
  memory and converted as before (``data.arrays``);
- an image folder's decoded cache, a set of ``.npy`` shards (``data.shards``).

``store[idx]`` (an int, a slice, an index array or tensor, a mask) gathers those images into a new uint8 tensor,
(n, H, W) grey or (n, C, H, W), like the in-memory splits: the rows are read in file order (sorted, each run of
consecutive rows in one read) and put back in the asked order. ``store.subset(idx)`` is a view (rows only,
nothing read). ``store.numpy()`` reads the whole split, for the few consumers that need it whole (figures of a
small test split); training, validation, evaluation and the PCA baseline never do.

Why positional reads (``os.preadv``) and not a memory map: the pages of a mapped file that a process touches
count in its resident memory, and the kernel maps whole page-cache folios around each row: measured on Linux
6.18, 128 random 784-byte rows of a 1 GB read from disk ``.npy`` added 236 MB of resident memory per batch,
whatever ``madvise`` said. A positional read copies the same bytes from the same page cache (what indexing a
memory map copies too) without mapping anything: a process's memory grows with the batch and the model, not
with the data set, and processes reading one file share its pages in the page cache.

Changes under a reader: every read first compares each file's size and modification time with those it had
when it was opened, and a read that comes back short is an error too: a file cut short or rewritten is a
``DataError`` naming it and the fix, never garbage pixels.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.errors import DataError

STREAM_ENV = "AELAB_STREAM"
STREAM_FRACTION = 0.25  # read from disk when the uint8 pixels exceed this fraction of the memory available
LAYOUTS = ("nhw", "nhwc", "nchw")
# Reads in flight for a batch of scattered rows: a disk answers several at once. 20,000 random 3 kB rows of a
# 47 GB file, out of the page cache, on a 2-core VM: 1 thread 8.4-9.4k rows/s, 4 threads 29-32k, 8 threads 41-46k.
READERS = 8
PARALLEL_RUNS = 32  # a read of fewer runs of consecutive rows than this stays in the calling thread
_readers: tuple[int, ThreadPoolExecutor] | None = None


def _reader_pool() -> ThreadPoolExecutor:
    """The process's reader threads (a forked child makes its own: its parent's threads are not in it)."""
    global _readers
    if _readers is None or _readers[0] != os.getpid():
        _readers = (os.getpid(), ThreadPoolExecutor(READERS, thread_name_prefix="aelab-read"))
    return _readers[1]


# ------------------------------------------------------------------------------------------ the rule
def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux: MemAvailable; else the free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def size_text(n: int) -> str:
    """Bytes in words: '78.4 kB', '1.2 GB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def forced(stream: bool | None = None) -> bool | None:
    """``stream`` when given, else ``AELAB_STREAM`` (1/true/yes: True, 0/false/no: False), else None (the rule)."""
    if stream is not None:
        return bool(stream)
    text = os.environ.get(STREAM_ENV, "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    if text:
        raise DataError(f"{STREAM_ENV}={text!r}: give 1 (read data sets from disk), 0 (into memory) or leave it unset")
    return None


def wanted(nbytes: int, stream: bool | None = None) -> bool:
    """Whether ``nbytes`` of uint8 pixels are read from disk rather than read into memory (the module docstring)."""
    choice = forced(stream)
    return nbytes > STREAM_FRACTION * available_memory() if choice is None else choice


# ------------------------------------------------------------------------------------------ one file
@dataclass(eq=False)
class ArrayFile:
    """A uint8 array in a ``.npy`` file, read in place (opened on first use); ``fix``: what to do when it
    changes."""

    path: Path
    offset: int              # bytes before the data
    shape: tuple[int, ...]   # of the array in the file: (N, ...) in its layout
    fix: str
    stamp: tuple[int, int] = (0, 0)  # (size, modification time in ns) when it was opened
    _fh: Any = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.stamp == (0, 0):
            st = self.path.stat()
            self.stamp = (st.st_size, st.st_mtime_ns)

    @property
    def end(self) -> int:
        return self.offset + int(np.prod(self.shape))

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:]))

    def check(self) -> None:
        """``DataError`` when the file is no longer the one opened (cut short, rewritten, removed)."""
        try:
            st = self.path.stat()
            now = (st.st_size, st.st_mtime_ns)
        except OSError as err:
            raise DataError(f"{self.path} cannot be read any more ({err.strerror}); {self.fix}") from None
        if now != self.stamp:
            what = f"{now[0]:,} bytes, was {self.stamp[0]:,}" if now[0] != self.stamp[0] else "rewritten"
            raise DataError(f"{self.path} changed while it was being read ({what}); {self.fix}")

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Rows ``rows`` (sorted) of the file into ``out`` (len(rows), row bytes), one read per run of
        consecutive rows."""
        self.check()
        with self._lock:
            if self._fh is None:
                self._fh = self.path.open("rb", buffering=0)
        fd, size = self._fh.fileno(), self.row_bytes
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(rows)]])
        buf = memoryview(out.reshape(-1)).cast("B")
        runs = list(zip((starts * size).tolist(), (ends * size).tolist(),
                        (self.offset + rows[starts] * size).tolist(), strict=True))
        if len(runs) < PARALLEL_RUNS:
            self._read_runs(fd, buf, runs)
        else:  # scattered rows (a shuffled batch): READERS reads in flight
            list(_reader_pool().map(functools.partial(self._read_runs, fd, buf), [runs[k::READERS]
                                                                                  for k in range(READERS)]))

    def _read_runs(self, fd: int, buf: memoryview, runs: list[tuple[int, int, int]]) -> None:
        """Each run (start and end in ``buf``, where in the file) by one read, unless the system returns fewer."""
        pread = os.preadv if hasattr(os, "preadv") else functools.partial(_pread, lock=self._lock)
        size = self.row_bytes
        for a, b, where in runs:
            done = a
            while done < b:
                got = pread(fd, [buf[done:b]], where + done - a)
                if got <= 0:
                    image = (where - self.offset + done - a) // size
                    raise DataError(f"{self.path} ends before image {image:,} its header promises (cut short while "
                                    f"it was being read); {self.fix}")
                done += got

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # a copy in another process opens the file itself
        return {**self.__dict__, "_fh": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


def _pread(fd: int, views: list[memoryview], where: int, lock: threading.Lock) -> int:
    """``os.preadv`` where there is none (Windows): seek and read under the file's lock."""
    with lock:
        os.lseek(fd, where, os.SEEK_SET)
        data = os.read(fd, len(views[0]))
    views[0][:len(data)] = data
    return len(data)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, Fortran order, data offset) of a ``.npy`` file, from its header; ``DataError`` otherwise."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), fh.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:80]}); save it with "
                        f"numpy.save") from None


def layout_of(shape: tuple[int, ...]) -> str | None:
    """The layout of images of array shape ``shape``, by the rule of ``arrays.to_nchw`` (channels last wins)."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4 and shape[-1] in (1, 3):
        return "nhwc"
    if len(shape) == 4 and shape[1] in (1, 3):
        return "nchw"
    return None


def image_shape_of(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    """(C, H, W) of one image of an array of ``shape`` in ``layout``."""
    if layout == "nhw":
        return 1, shape[1], shape[2]
    if layout == "nhwc":
        return shape[3], shape[1], shape[2]
    return shape[1], shape[2], shape[3]


def open_npy(path: Path, fix: str, expect: int | None = None) -> ArrayFile | None:
    """The uint8 images of ``path`` as a file read in place, None when they cannot be (another type,
    Fortran order, another rank: those are read into memory and converted). A file shorter than its header says
    (or than ``expect`` bytes) is a ``DataError``."""
    shape, dtype, fortran, offset = npy_header(path)
    size = path.stat().st_size
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if size < need:
        raise DataError(f"{path} is truncated: its header says {shape} {dtype} ({need:,} bytes) but the file holds "
                        f"{size:,} bytes; write it again (numpy.save) or restore it")
    if expect is not None and size != expect:
        raise DataError(f"{path} holds {size:,} bytes, expected {expect:,}; {fix}")
    if dtype != np.uint8 or fortran or layout_of(shape) is None or not shape[0]:
        return None
    return ArrayFile(path, offset, shape, fix)


# ------------------------------------------------------------------------------------------ the store
class ImageStore:
    """uint8 images in ``.npy`` files (one, or shards in order), seen through ``rows`` (the module docstring).

    ``squeeze``: grey images come out (n, H, W), as the in-memory splits; else always (n, C, H, W)."""

    def __init__(self, files: Sequence[ArrayFile], layout: str, rows: np.ndarray | None = None,
                 squeeze: bool = False):
        if layout not in LAYOUTS or not files:
            raise ValueError(f"an image store needs files and a layout of {LAYOUTS}")
        self.files, self.layout = tuple(files), layout
        self.image_shape = image_shape_of(self.files[0].shape, layout)
        if any(image_shape_of(f.shape, layout) != self.image_shape for f in self.files):
            raise ValueError("the files of an image store hold images of different shapes")
        self.starts = np.concatenate([[0], np.cumsum([f.shape[0] for f in self.files])]).astype(np.int64)
        self.rows = np.arange(self.starts[-1], dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self.squeeze = squeeze and self.image_shape[0] == 1

    # the tensor-like surface of a split's images
    dtype = torch.uint8

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *(self.image_shape[1:] if self.squeeze else self.image_shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.image_shape))

    def dim(self) -> int:
        return self.ndim

    def subset(self, key: Any, squeeze: bool | None = None) -> ImageStore:
        """A view of the rows ``key`` selects (an int array, a mask, a slice); nothing is read."""
        rows = self.rows[_index(key)]
        return ImageStore(self.files, self.layout, np.atleast_1d(rows),
                          self.squeeze if squeeze is None else squeeze)

    def take(self, key: Any) -> np.ndarray:
        """The images ``key`` selects as a new uint8 array (n, C, H, W)."""
        return self._gather(np.atleast_1d(self.rows[_index(key)]))

    def __getitem__(self, key: Any) -> torch.Tensor:
        single = isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0)
        out = self.take(key)
        if self.squeeze:
            out = out[:, 0]
        return torch.from_numpy(out[0] if single else out)  # a fresh array, writable: no warning

    def numpy(self) -> np.ndarray:
        """The whole split in memory (n, H, W) grey (squeezed) or (n, C, H, W): only for small splits."""
        return self[:].numpy()

    def reshape(self, *shape: Any) -> torch.Tensor:
        """The whole split in memory, reshaped (as a tensor would be): for consumers of small splits only (the
        one-class baselines, figures); the training and evaluation passes read batches."""
        return self[:].reshape(*shape)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """The images in order, ``size`` at a time, as uint8 arrays (n, C, H, W)."""
        for i in range(0, len(self), max(1, size)):
            yield self.take(slice(i, i + size))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.image_shape), np.uint8)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= self.starts[-1]:
            raise IndexError(f"image index out of range for {self.starts[-1]} images")
        ascending = bool(np.all(rows[1:] > rows[:-1]))
        order = None if ascending else np.argsort(rows, kind="stable")
        ordered = rows if order is None else rows[order]
        cuts = np.searchsorted(ordered, self.starts)
        done = 0
        for k, f in enumerate(self.files):
            lo, hi = int(cuts[k]), int(cuts[k + 1])
            if hi <= lo:
                continue
            local = ordered[lo:hi] - self.starts[k]
            if order is None and self.layout != "nhwc":  # straight into place
                f.read(local, out[lo:hi].reshape(hi - lo, -1))
            else:
                part = np.empty((hi - lo, *f.shape[1:]), np.uint8)
                f.read(local, part.reshape(hi - lo, -1))
                part = _to_nchw(part, self.layout)
                if order is None:
                    out[lo:hi] = part
                else:
                    out[order[lo:hi]] = part
            done += hi - lo
        assert done == len(out)
        return out


def _index(key: Any) -> Any:
    if isinstance(key, torch.Tensor):
        key = key.detach().cpu().numpy()
    return key


def _to_nchw(part: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        return part[:, None]
    if layout == "nhwc":
        return np.moveaxis(part, -1, 1)
    return part


def rows(images: torch.Tensor | ImageStore, lo: int, hi: int) -> torch.Tensor | ImageStore:
    """Images ``lo:hi`` of a split: a view of a tensor, or of a store (nothing read)."""
    return images.subset(slice(lo, hi)) if isinstance(images, ImageStore) else images[lo:hi]


def digest_parts(a: np.ndarray | ImageStore, chunk: int = 1024) -> Iterator[bytes | memoryview]:
    """What ``own.content_digest`` hashes of an array: its header text, then its bytes (C order, (n, C, H, W)
    for images), read ``chunk`` images at a time from a store, so that a store's digest is its array's."""
    if isinstance(a, ImageStore):
        yield f"uint8|{(len(a), *a.image_shape)}|".encode()
        for part in a.chunks(chunk):
            yield part.data
        return
    yield f"{a.dtype}|{a.shape}|".encode()
    yield np.ascontiguousarray(a).data
