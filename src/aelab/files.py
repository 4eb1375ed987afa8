"""Writing files safely: never a half-written file, whatever stops the process.

Every writer goes through a temporary file (or folder) beside the target and renames it into place at the
end: ``os.replace`` is atomic on one file system, so a reader sees the old file or the new one, never a part.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from aelab.errors import OutputError, RunError

LOCK_NAME = ".aelab.lock"
_held: dict[str, int] = {}  # folder -> how deep this process holds its lock (the lock is re-entrant in a process)
_held_guard = threading.Lock()


def user_cache_dir() -> Path:
    """aelab's folder in the user cache: ``$XDG_CACHE_HOME/aelab`` or ``~/.cache/aelab``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aelab"


def public_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a temporary file or folder (created private by ``tempfile``) the usual permissions under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if folder else 0o666) & ~mask)


def temp_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty temporary file in the folder of ``path`` (made if needed), with the usual permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    public_mode(tmp)
    return Path(tmp)


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``:
    a reader sees the old file or the whole new one, never a part (for writers that stream, like ``np.savez``)."""
    path = Path(path)
    tmp = None
    try:
        tmp = temp_beside(path)
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a file-size or quota limit, no permission: the old file stays as it was
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}; free some space or fix the permissions, "
                          f"the previous {path.name} is unchanged") from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    return atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class StagedDir:
    """A temporary folder beside ``final``, renamed to ``final`` by ``commit``; removed on error.

    ``final`` must be new or empty unless ``force`` (then the old folder is replaced whole at ``commit``).
    """

    def __init__(self, final: str | os.PathLike, force: bool = False):
        self.final = Path(final)
        if self.final.exists():
            if not self.final.is_dir():
                raise OutputError(f"{self.final} is a file; give a folder for the images")
            if any(self.final.iterdir()) and not force:
                raise OutputError(f"{self.final} already holds files; choose another -o folder or pass --force to "
                                  f"replace it")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        public_mode(self.tmp, folder=True)

    def write(self, name: str, data: bytes) -> None:
        try:
            (self.tmp / name).write_bytes(data)
        except OSError as err:
            raise OutputError(f"cannot write {self.final / name}: {err.strerror or err}") from None

    def commit(self) -> Path:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def __enter__(self) -> StagedDir:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive write lock of ``folder`` (made if needed) inside the block; re-entrant in a process.

    Written by hand on ``fcntl.flock`` because the message must name the holder: the lock file keeps the pid and
    host of its holder, and a second writer gets ``RunError`` naming them at once instead of waiting. (filelock
    truncates the file on every attempt, which would erase that.) The kernel releases the lock when the holder
    dies, even by kill -9, so a stale lock file never blocks anyone. Temporary files a killed writer left
    (``.*.tmp``, in the folder and its figures/) are removed when the lock is taken: only its holder writes there.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise RunError(f"{path} is being written by another aelab process ({holder}); wait for it to end or "
                           f"use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        for stale in (*path.glob(".*.tmp"), *path.glob("figures/.*.tmp")):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
