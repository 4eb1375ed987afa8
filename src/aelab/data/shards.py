"""An image folder decoded by every core, and its decoded cache of ``.npy`` shards, read back from disk.

``decode_chunks`` decodes image files on all cores (a process pool over chunks of files, one progress bar) and
yields the chunks in order; ``decode_all`` fills one array with them (the in-memory path).

A folder read from disk (``data.stream``) is decoded once into ``<cache>/<tag>.shards/``:

- ``shard-00000.npy``, ...: uint8 (n, C, H, W), at most ``SHARD_BYTES`` each, the training images first, then the
  test images; ``labels.npy``: their labels (int64), in the same order; ``manifest.json``: the format, the key
  (the files' names, sizes and times and the options, as the in-memory cache's), the counts, the content
  digest, and each shard's size and fingerprint (sha256 of its first and last 64 kB). The content digest of a
  ``.npy`` read in place is remembered in the user cache by the file's stamp (``remembered_digest``).
- **Disk.** Before anything is written the free space is checked against the cache's size: one line naming
  both when it does not fit. Every chunk is written to its shard as it is decoded (memory holds a few chunks),
  in a temporary folder beside the cache that is renamed into place once complete; a build cut short (a full
  disk, a bad image, Ctrl-C, kill) leaves no cache, and the previous cache as it was.
- **Opening.** A cache of another key is rebuilt; one whose shard has another size or fingerprint (cut short,
  overwritten) is decoded again, never trusted. A shard that changes while it is read is a ``DataError`` naming
  it and the fix (delete the cache).
- **Several processes** (``--nproc``) loading the same folder build the cache once: the others wait on a lock
  file beside it, then read the cache the first one wrote; each reads its own images of every batch.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import mmap
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aelab.data import folders
from aelab.data.idx import cache_dir
from aelab.data.stream import ImageStore, open_npy, size_text
from aelab.device import cores
from aelab.errors import DataError
from aelab.files import atomic_write_text

SHARDS_FORMAT = "aelab-shards-1"
SHARD_BYTES = 1 << 30   # pixels per shard file at most
CHUNK_BYTES = 16 << 20  # pixels decoded per task of the process pool at most
CHUNK_IMAGES = 512      # images per task at most
FINGERPRINT_BYTES = 64 << 10
DISK_MARGIN = 64 << 20  # left free beyond the cache itself


# ------------------------------------------------------------------------------------------ decoding on all cores
def chunk_size(image_bytes: int) -> int:
    """Images per task of the process pool (``CHUNK_IMAGES``, fewer for large images)."""
    return max(1, min(CHUNK_IMAGES, CHUNK_BYTES // max(1, image_bytes)))


def _pool_context() -> Any:
    """fork where there is one (a worker starts at once, with the modules loaded), else the platform's default."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


# Shared memory the forked workers of ordered_map write their results into, by call: a result sent back through
# the pool's pipe is pickled, piped and unpickled (64x64 colour patches, 2 workers: 1.48x one process; with
# nothing sent back 1.72x), a result in a slot is copied once.
_SLOTS: dict[int, mmap.mmap] = {}


def _into_slot(fn: Callable[..., np.ndarray], token: int, slot: int, task: Any) -> Any:
    """In a worker: ``fn(task)`` written into slot ``slot`` of the call's shared memory, (shape, dtype) returned;
    the array itself where there is no such memory (a spawned worker) or it does not fit a slot."""
    a = np.ascontiguousarray(fn(task))
    shared = _SLOTS.get(token)
    if shared is None or a.nbytes > CHUNK_BYTES:
        return a
    np.frombuffer(shared, np.uint8, a.nbytes, slot * CHUNK_BYTES)[:] = a.reshape(-1).view(np.uint8)
    return a.shape, a.dtype.str


def ordered_map(fn: Callable[..., np.ndarray], tasks: list[Any], progress: bool = True, desc: str = "decode",
                workers: int | None = None) -> Iterator[np.ndarray]:
    """``fn(task)`` (an array of images) for each of ``tasks``, by ``workers`` processes (default: every core this
    process may use), yielded in order, a few tasks ahead at most; a progress bar counts the images. A worker's
    error (a ``DataError`` naming a damaged file) is raised here. Forked workers hand their results over in
    shared memory (``_SLOTS``: one slot of ``CHUNK_BYTES`` per task in flight, 2 x workers + 1)."""
    workers = max(1, min(workers or cores(), len(tasks)))
    bar = tqdm(total=sum(len(t) for t in tasks), desc=desc, unit="img", disable=None if progress else True,
               leave=False)
    try:
        if workers == 1:
            for task in tasks:
                part = fn(task)
                bar.update(len(part))
                yield part
            return
        context = _pool_context()
        token, free = id(tasks), list(range(2 * workers + 1))
        # Made before the workers fork, so that they share it; a spawned worker starts without it (the pipe).
        shared = mmap.mmap(-1, len(free) * CHUNK_BYTES) if context.get_start_method() == "fork" else None
        if shared is not None:
            _SLOTS[token] = shared
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        try:
            todo = iter(tasks)
            pending: collections.deque[tuple[int, Future[Any]]] = collections.deque()

            def submit(task: Any) -> None:
                slot = free.pop()
                pending.append((slot, pool.submit(_into_slot, fn, token, slot, task)))

            for task in itertools.islice(todo, 2 * workers):
                submit(task)
            while pending:
                slot, future = pending.popleft()
                got = future.result()
                if shared is None or isinstance(got, np.ndarray):
                    part = got
                else:
                    shape, dtype = got
                    part = np.frombuffer(shared, dtype, int(np.prod(shape)), slot * CHUNK_BYTES).reshape(shape).copy()
                free.append(slot)
                for task in itertools.islice(todo, 1):
                    submit(task)
                bar.update(len(part))
                yield part
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _SLOTS.pop(token, None)
            if shared is not None:
                shared.close()
    finally:
        bar.close()


def decode_chunks(files: list[Path], channels: int, size: tuple[int, int], progress: bool = True,
                  desc: str = "decode", workers: int | None = None, resize: str = "crop") -> Iterator[np.ndarray]:
    """The pixels of ``files`` (``folders.decode``: uint8 (n, C, H, W)), decoded on every core in chunks
    (``ordered_map``), in the files' order."""
    step = chunk_size(channels * size[0] * size[1])
    chunks = [files[i:i + step] for i in range(0, len(files), step)]
    fn = functools.partial(folders.decode, channels=channels, size=size, progress=False, resize=resize)
    return ordered_map(fn, chunks, progress, desc, workers)


def decode_all(files: list[Path], channels: int, size: tuple[int, int], progress: bool = True,
               desc: str = "decode", resize: str = "crop") -> np.ndarray:
    """``folders.decode`` on every core: the pixels of ``files`` as one uint8 array (n, C, H, W)."""
    out = np.empty((len(files), channels, *size), dtype=np.uint8)
    done = 0
    for part in decode_chunks(files, channels, size, progress, desc, resize=resize):
        out[done:done + len(part)] = part
        done += len(part)
    return out


def remembered_digest(key: str, compute: Callable[[], str]) -> str:
    """``compute()`` (the content digest of a file read from disk), remembered in the user cache under ``key``
    (the file's path, size, times and inode with the options): a file larger than memory is read through once to
    hash it, not at every start. A changed file has another key; an unreadable memo is computed again."""
    memo = cache_dir() / "own" / "digests" / hashlib.sha256(key.encode()).hexdigest()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = memo.read_text().strip()
        if len(text) == 64:
            return text
    digest = compute()
    with contextlib.suppress(OSError):  # a read-only cache: computed every time, never an error
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, digest + "\n")
    return digest


# ------------------------------------------------------------------------------------------ the cache
@dataclass
class ShardCache:
    """A decoded folder on disk: the training and test images as stores, their labels, and the manifest."""

    folder: Path
    train: ImageStore
    test: ImageStore
    train_y: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    content: str
    notes: list[str] = field(default_factory=list)


def _fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(FINGERPRINT_BYTES))
        fh.seek(max(0, size - FINGERPRINT_BYTES))
        h.update(fh.read(FINGERPRINT_BYTES))
    return h.hexdigest()


def _stores(folder: Path, meta: dict[str, Any]) -> tuple[ImageStore, ImageStore]:
    fix = f"delete {folder} and run again (the folder is decoded anew)"
    files = []
    for s in meta["shards"]:
        mapped = open_npy(folder / s["name"], fix, expect=int(s["bytes"]))
        if mapped is None or mapped.shape != (s["images"], *meta["shape"]):
            raise DataError(f"{folder / s['name']} is not the shard its manifest describes; {fix}")
        files.append(mapped)
    whole = ImageStore(files, "nchw")
    n = int(meta["train"])
    return whole.subset(slice(0, n)), whole.subset(slice(n, n + int(meta["test"])))


def open_cache(folder: Path, key: str) -> ShardCache | str | None:
    """The cache in ``folder`` made for ``key``; None when there is none (or of another key); a string saying
    what is wrong when it is damaged (then it is decoded again)."""
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != SHARDS_FORMAT or meta.get("key") != key:
        return None
    try:
        for s in meta["shards"]:
            path = folder / s["name"]
            if path.stat().st_size != s["bytes"] or _fingerprint(path) != s["fingerprint"]:
                return f"{path} is damaged (cut short or overwritten)"
        labels = np.load(folder / "labels.npy", allow_pickle=False)
        train, test = _stores(folder, meta)
    except (OSError, ValueError, KeyError, TypeError, DataError) as err:
        return f"{folder} is damaged ({str(err)[:80]})"
    n = len(train)
    return ShardCache(folder, train, test, labels[:n].astype(np.int64), labels[n:].astype(np.int64),
                      tuple(meta["classes"]), meta["content"],
                      [f"decoded images read batch by batch from the cache {folder}"])


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Wait for any other process building ``folder``; then remove what a killed build left beside it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        os.close(fd)


def _write_shard(path: Path, parts: Iterator[np.ndarray], count: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """Write ``count`` images from ``parts`` to the .npy file ``path`` (regular writes: a full disk is an
    OSError, never a crash in a memory-mapped page); its manifest entry."""
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (count, *shape)})
        size = fh.tell() + count * int(np.prod(shape))
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fh.fileno(), 0, size)  # the space is taken now, or ENOSPC now
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise  # other errors: a file system without it, written as it comes
        written = 0
        for part in parts:
            fh.write(np.ascontiguousarray(part).data)
            written += len(part)
        assert written == count
        fh.flush()
        os.fsync(fh.fileno())
    return {"name": path.name, "images": count, "bytes": path.stat().st_size, "fingerprint": _fingerprint(path)}


def _split_parts(parts: Iterator[np.ndarray], counts: list[int]) -> Iterator[Iterator[np.ndarray]]:
    """``parts`` (chunks of images) regrouped into runs of ``counts`` images, one iterator per run."""
    buffer: list[np.ndarray] = []

    def run(n: int) -> Iterator[np.ndarray]:
        while n:
            if not buffer:
                buffer.append(next(parts))
            head = buffer.pop(0)
            if len(head) > n:
                buffer.insert(0, head[n:])
                head = head[:n]
            n -= len(head)
            yield head

    for n in counts:
        yield run(n)


def build(folder: Path, key: str, source: str, parts: Iterator[np.ndarray], train_y: np.ndarray,
          test_y: np.ndarray, classes: tuple[str, ...], shape: tuple[int, int, int],
          digest: Callable[..., str]) -> ShardCache:
    """Write the images ``parts`` yields (lazily: chunks of uint8 (n, C, H, W), the training images then the test
    images, as many as there are labels) into the cache ``folder`` (see the module docstring), and open it.
    ``digest(x, y, x_test, y_test, classes)``: the content digest (``own.content_digest``), read back."""
    n_train, n_test = len(train_y), len(test_y)
    with _build_lock(folder), contextlib.closing(parts):  # closing: stops the decoding processes
        hit = open_cache(folder, key)  # another process may have built it while this one waited
        if isinstance(hit, ShardCache):
            return hit
        n, image_bytes = n_train + n_test, int(np.prod(shape))
        per_shard = max(1, SHARD_BYTES // image_bytes)
        counts = [min(per_shard, n - i) for i in range(0, n, per_shard)]
        need = n * image_bytes + 128 * len(counts) + 8 * n + DISK_MARGIN
        free = shutil.disk_usage(folder.parent).free
        if need > free:
            raise DataError(f"{source}: {n:,} images of {shape[0]}x{shape[1]}x{shape[2]} need {size_text(need)} of "
                            f"disk for the decoded cache but {folder.parent} has {size_text(free)} free; free some "
                            f"space there or give a smaller --image-size")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            shards = [_write_shard(tmp / f"shard-{k:05d}.npy", run, count, shape)
                      for k, (run, count) in enumerate(zip(_split_parts(parts, counts), counts, strict=True))]
            labels = np.concatenate([train_y, test_y]).astype(np.int64)
            np.save(tmp / "labels.npy", labels)
            meta = {"format": SHARDS_FORMAT, "key": key, "source": source, "classes": list(classes),
                    "shape": list(shape), "train": n_train, "test": n_test, "shards": shards}
            tr, te = _stores(tmp, meta)
            meta["content"] = digest(tr, labels[:n_train], te, labels[n_train:], classes)
            (tmp / "manifest.json").write_text(json.dumps(meta, indent=1))
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}.tmp")
            if folder.exists():
                os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except OSError:
                if old.exists():
                    os.replace(old, folder)  # put the previous cache back: the message says it is unchanged
                raise
            shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            raise DataError(f"cannot write the decoded cache of {source} in {folder.parent}: "
                            f"{err.strerror or err}; free some space or fix the permissions (nothing was "
                            f"kept; the previous cache is unchanged)") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    cache = open_cache(folder, key)
    if not isinstance(cache, ShardCache):
        raise DataError(f"{folder}: the cache just written cannot be read back ({cache}); delete it and run again")
    cache.notes = [f"{n:,} images from {source} written to the cache {folder}"]
    return cache


def cache_folder(candidates: list[Path]) -> Path:
    """The first of ``candidates`` (cache folders) whose parent can be written: beside the data, else the user
    cache; the first when none can (its build then fails naming it)."""
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.access(path.parent, os.W_OK):
                return path
        except OSError:
            continue
    return candidates[0]

