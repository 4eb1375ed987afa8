"""Writing files safely: never a half-written file, whatever stops the process.

Every writer goes through a temporary file (or folder) beside the target and renames it into place at the
end: ``os.replace`` is atomic on one file system, so a reader sees the old file or the new one, never a part.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aelab.errors import OutputError


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
