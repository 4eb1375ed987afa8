"""Writing files safely: never a half-written file, whatever stops the process, and never over what is not ours.

Every writer goes through a temporary file (or folder) beside the target and renames it into place at the
end: ``os.replace`` is atomic on one file system, so a reader sees the old file or the new one, never a part.
Every path a writer is given goes through ``write_target`` first: a symbolic link is written through (the
temporary file lies beside the link's target, which is replaced; the link stays a link), and a device, FIFO
or socket (``/dev/stdout``, ``/dev/null``, a named pipe) is written directly, since a rename would put a
regular file in its place. An output folder (``StagedDir``) lists the files aelab wrote in it, so ``force``
replaces those and nothing else; no output is one of the job's inputs, inside one, or around one
(``check_apart``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from aelab.errors import OutputError, RunError

LOCK_NAME = ".aelab.lock"
OUTPUT_LIST = ".aelab-output.json"  # in an output folder: the files aelab wrote there, all that ``force`` replaces
STAGE_PREFIX = ".aelab-stage-"      # StagedDir's hidden staging folder inside the output folder
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


# ------------------------------------------------------------------------------------------ where a write lands
def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "named pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"


def is_special(path: str | os.PathLike) -> bool:
    """Whether ``path`` (links followed) is a device, FIFO or socket: written in place, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_target(path: str | os.PathLike, folder: bool = False) -> Path:
    """The path a write to ``path`` lands on: the real path, links followed (they stay links), or ``path`` itself
    for a device, FIFO or socket (written directly). Refuses in one line (``OutputError``) a dangling link, a link
    loop, a path under a file, and a folder where a file goes (or, with ``folder``, anything but a folder)."""
    p = Path(path)
    try:
        st: os.stat_result | None = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise OutputError(f"{p} is a symbolic link to {os.readlink(p)}, which does not exist; create its target "
                              f"or give another path") from None
        st = None
    except NotADirectoryError:
        above = next((a for a in p.parents if a.exists() and not a.is_dir()), p.parent)
        raise OutputError(f"{p}: {above} is a file, not a folder; give a path inside a folder") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OutputError(f"{p}: a loop of symbolic links; remove the link or give another path") from None
        raise OutputError(f"cannot write {p}: {err.strerror or err}; fix the permissions or give another path") \
            from None
    if st is not None:
        is_dir, is_reg = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
        if folder and not is_dir:
            what = "a file" if is_reg else f"a {_kind(st.st_mode)}"
            raise OutputError(f"{p} is {what}, not a folder; give a folder")
        if not folder and is_dir:
            raise OutputError(f"{p} is a folder; give a file name")
        if not is_dir and not is_reg:
            return p  # /dev/stdout is a link the kernel resolves, not a path: open it as given
    return Path(os.path.realpath(p))


def check_apart(out: str | os.PathLike, inputs: Iterable[object]) -> None:
    """Refuse, in one line, an output that is one of ``inputs``, lies inside an input folder or holds an input
    (real paths compared, links followed): a job never writes over or into what it reads. Inputs that are not
    existing paths (``fashion-mnist:test``, arrays) are skipped."""
    o = Path(os.path.realpath(out))
    for given in inputs:
        if not isinstance(given, (str, os.PathLike)) or not os.path.lexists(given):
            continue
        i = Path(os.path.realpath(given))
        if o == i:
            raise OutputError(f"{out} is the input {given}; an output never replaces its input: choose another -o")
        if i in o.parents:
            raise OutputError(f"{out} lies inside the input folder {given}; choose an -o outside it")
        if o in i.parents:
            raise OutputError(f"{out} holds the input {given}; choose an -o that does not contain it")


def make_folder(path: str | os.PathLike) -> Path:
    """The folder ``path`` (links followed), made if needed; one line (``OutputError``) when it cannot be."""
    real = write_target(path, folder=True)
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot make the folder {path}: {err.strerror or err}; fix the permissions or give "
                          f"another path") from None
    return real


def temp_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty temporary file beside the real target of ``path`` (its folder made if needed), with the usual
    permissions, for ``move_into_place``; in the temporary folder when the target is a device or a FIFO."""
    target = write_target(path)
    folder = Path(tempfile.gettempdir()) if is_special(target) else target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}; fix the permissions or give another "
                          f"path") from None
    os.close(fd)
    public_mode(tmp)
    return Path(tmp)


def _keep_mode(target: Path, tmp: Path) -> None:
    """Give the new file the permissions of the regular file it replaces, if any."""
    with suppress(OSError):
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            os.chmod(tmp, stat.S_IMODE(st.st_mode))


def move_into_place(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put the finished temporary file ``tmp`` (from ``temp_beside(path)``) at ``path``: renamed over the real
    target, or copied into a device or FIFO. Returns ``path``."""
    tmp = Path(tmp)
    try:
        target = write_target(path)
        if is_special(target):
            with tmp.open("rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.unlink()
        else:
            _keep_mode(target, tmp)
            os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}; free some space or fix the permissions"
                          ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Path(path)


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``:
    a reader sees the old file or the whole new one, never a part (for writers that stream, like ``np.savez``).
    A link is written through; a device or FIFO is written directly."""
    path = Path(path)
    target = write_target(path)
    if is_special(target):
        try:
            with open(target, "wb") as fh:
                write(fh)
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
        return path
    tmp = None
    try:
        tmp = temp_beside(path)
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        _keep_mode(target, tmp)
        os.replace(tmp, target)
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


# ------------------------------------------------------------------------------------------ output folders
class StagedDir:
    """Files written into a hidden staging folder inside ``final`` and moved into place by ``commit``; on error
    the staging folder goes (and ``final`` too when it was made for this and is still empty).

    ``final`` (links followed) must be new or empty unless ``force``; ``force`` replaces only what aelab wrote
    there (the files listed in its ``OUTPUT_LIST``) and refuses a folder holding anything else. ``inputs``: paths
    the job reads; the folder may not be, lie in or hold one of them (``check_apart``). Nothing is written
    before the first ``write``, so a job can make it first and fail early.
    """

    def __init__(self, final: str | os.PathLike, force: bool = False, inputs: Iterable[object] = ()):
        self.given = Path(final)
        self.final = write_target(final, folder=True)
        check_apart(final, inputs)
        self.stage: Path | None = None
        self.made = False
        entries = self._entries()
        if entries and not force:
            raise OutputError(f"{self.given} already holds files; choose another -o folder or pass --force to "
                              f"replace what aelab wrote there")
        ours = self._listed()
        foreign = sorted(e for e in entries if e not in ours or not self._is_file(e))
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise OutputError(f"{self.given} holds {foreign[0]!r}{more}, not among the files aelab wrote there (listed "
                              f"in {OUTPUT_LIST}); --force replaces only those: move the others or choose another -o "
                              f"folder")

    def _entries(self) -> list[str]:
        if not self.final.is_dir():
            return []
        return [e for e in os.listdir(self.final)
                if e != OUTPUT_LIST and not (e.startswith(STAGE_PREFIX) and e.endswith(".tmp"))]

    def _is_file(self, name: str) -> bool:
        with suppress(OSError):
            return stat.S_ISREG(os.lstat(self.final / name).st_mode)
        return False

    def _listed(self) -> set[str]:
        """The file names the folder's list says aelab wrote (plain names only: the list is read, not trusted)."""
        try:
            names = json.loads((self.final / OUTPUT_LIST).read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            return set()
        if not isinstance(names, list):
            return set()
        return {n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\0" not in n}

    def _open(self) -> Path:
        if self.stage is None:
            try:
                self.made = not self.final.exists()
                self.final.mkdir(parents=True, exist_ok=True)
                for stale in self.final.glob(f"{STAGE_PREFIX}*.tmp"):  # left by a killed writer
                    shutil.rmtree(stale, ignore_errors=True)
                self.stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, suffix=".tmp", dir=self.final))
            except OSError as err:
                raise OutputError(f"cannot write in {self.given}: {err.strerror or err}; fix the permissions or "
                                  f"choose another -o folder") from None
        return self.stage

    def write(self, name: str, data: bytes) -> None:
        try:
            (self._open() / name).write_bytes(data)
        except OSError as err:
            raise OutputError(f"cannot write {self.given / name}: {err.strerror or err}") from None

    def commit(self) -> Path:
        """Move the staged files into the folder, replacing the ones aelab wrote there before (and only those)."""
        stage = self._open()
        new = set(os.listdir(stage))
        old = self._listed()
        try:
            # at every moment, every file of the folder that aelab wrote is in its list
            write_json(self.final / OUTPUT_LIST, {"written_by": "aelab", "files": sorted(old | new)})
            for name in sorted(new):
                os.replace(stage / name, self.final / name)
            for name in sorted(old - new):
                if self._is_file(name):
                    (self.final / name).unlink()
            write_json(self.final / OUTPUT_LIST, {"written_by": "aelab", "files": sorted(new)})
        except OSError as err:
            raise OutputError(f"cannot write in {self.given}: {err.strerror or err}; free some space or fix the "
                              f"permissions") from None
        shutil.rmtree(stage, ignore_errors=True)
        self.made = False
        return self.given

    def __enter__(self) -> StagedDir:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.stage is not None and self.stage.exists():
            shutil.rmtree(self.stage, ignore_errors=True)
        if self.made:
            with suppress(OSError):
                self.final.rmdir()  # only when empty


# ------------------------------------------------------------------------------------------ the folder lock
@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive write lock of ``folder`` (made if needed) inside the block; re-entrant in a process.

    Written by hand on ``fcntl.flock`` because the message must name the holder: the lock file keeps the pid and
    host of its holder, and a second writer gets ``RunError`` naming them at once instead of waiting. (filelock
    truncates the file on every attempt, which would erase that.) The kernel releases the lock when the holder
    dies, even by kill -9, so a stale lock file never blocks anyone. Temporary files a killed writer left
    (``.*.tmp``, in the folder and its figures/) are removed when the lock is taken: only its holder writes there.
    A folder that cannot hold the lock file (read-only, under a file) is an ``OutputError`` naming it.
    """
    path = Path(folder)
    key = str(write_target(path, folder=True))
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
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(f"cannot write in {path} ({err.strerror or err}): aelab writes its results and its lock "
                          f"file {LOCK_NAME} there; make the folder writable or copy it to a writable place"
                          ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise RunError(f"{path} is being written by another aelab process ({holder}); wait for it to end or "
                           f"use another folder") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as err:
            raise OutputError(f"cannot write in {path} ({err.strerror or err}); free some space") from None
        for stale in (*path.glob(".*.tmp"), *path.glob("figures/.*.tmp")):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with suppress(OSError):
                    stale.unlink(missing_ok=True)
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
