"""IDX files, the format of the built-in data sets: download with checks, decompress, verify, parse.

Every file is checked against the official sha256 of its *uncompressed* content before use (DESIGN.md).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aelab.errors import DataError


def cache_dir() -> Path:
    """The user cache of aelab: downloaded data sets, decoded image folders that cannot keep their own cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aelab"


# --------------------------------------------------------------------------------------------- download
def download_file(stem: str, dest: Path, sha256: str, mirrors: Sequence[str], retries: int = 3,
                  timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch ``<mirror>/<stem>.gz`` into ``dest``: progress bar, retries over mirrors, checksum, atomic write."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for attempt in range(retries):
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"{stem}.gz",
                              disable=None if progress else True, leave=False) as bar:
                        while chunk := resp.read(1 << 16):
                            out.write(chunk)
                            bar.update(len(chunk))
                    if total is not None and out.tell() != total:
                        raise DataError(f"{url} ended after {out.tell()} of {total} bytes")
                read_idx(Path(tmp), sha256, label=url)  # checks gzip, checksum, IDX header
                os.replace(tmp, dest)
                return dest
            except (OSError, urllib.error.URLError, DataError) as err:
                errors.append(f"{url}: {err}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        if attempt + 1 < retries:
            time.sleep(min(2.0**attempt * 0.5, 4.0))
    raise DataError(errors[-1] if errors else f"no mirror for {stem}")


# --------------------------------------------------------------------------------------------- IDX files
def read_idx(path: Path, sha256: str | None, label: str | None = None) -> np.ndarray:
    """Decompress, verify and parse one IDX gzip file into a uint8 array."""
    label = label or str(path)
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, zlib.error) as err:
        raise DataError(f"{label} is truncated or damaged ({err}); delete it and fetch it again") from None
    except gzip.BadGzipFile as err:
        raise DataError(f"{label} is not a gzip file ({err}); replace it with the official .gz file") from None
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise DataError(f"{label}: checksum mismatch (sha256 of content {digest[:12]}..., expected "
                            f"{sha256[:12]}...); delete it and fetch the official file again")
    return parse_idx(raw, label)


def idx_header(raw: bytes, label: str = "IDX data", any_size: bool = False) -> tuple[tuple[int, ...], int]:
    """(dimensions, offset of the data) of IDX bytes, checked: uint8 labels (n,) or images (n, h, w), 28x28 unless
    ``any_size``. Only the first 4 + 4 * ndim bytes are needed."""
    if len(raw) < 8:
        raise DataError(f"{label}: too short for an IDX header; replace it with the official file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        magic = struct.unpack(">I", raw[:4])[0]
        raise DataError(f"{label}: wrong IDX magic {magic} (expected 2049 for labels or 2051 for images); "
                        f"replace it with the official file")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{label}: too short for an IDX header; replace it with the official file")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    if ndim == 3 and dims[1:] != (28, 28) and not any_size:
        raise DataError(f"{label}: images of shape {dims[1:]}, expected (28, 28); this is not MNIST-like data")
    return tuple(int(d) for d in dims), 4 + 4 * ndim


def parse_idx(raw: bytes, label: str = "IDX data", any_size: bool = False) -> np.ndarray:
    """IDX bytes -> uint8 array (labels (n,) or images (n, h, w)); images must be 28x28 unless ``any_size``."""
    dims, offset = idx_header(raw, label, any_size)
    expected = math.prod(dims)  # exact: three 32-bit numbers may overflow a 64-bit product
    if len(raw) - offset != expected:
        raise DataError(f"{label}: header says {dims} but holds {len(raw) - offset} bytes; replace it with the "
                        f"official file")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
