"""Latent-code files: written a batch at a time and renamed into place, read back for ``aelab decode``.

Formats, chosen by the file's suffix:

- ``.npy``: the codes, float32 (n, latent). Names and labels, when known, go to a sidecar CSV beside it,
  ``<stem>.index.csv`` with the columns ``index,name,label,class`` (row i describes code row i).
- ``.csv``: one row per image: ``name``, ``label``, ``class`` (those that are known) then ``z0 .. z{k-1}``.
- ``.parquet``: the same columns (needs pyarrow: ``pip install 'aelab[parquet]'``).

Writers stream to a temporary file in the target folder and rename it over the target on ``commit``; an
error on the way removes the temporary files, so there is never a half-written code file.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aelab.errors import InputError, OutputError
from aelab.files import move_into_place, temp_beside, write_target

FORMATS = (".npy", ".csv", ".parquet")
META_COLUMNS = ("name", "label", "class")


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.stem + ".index.csv")


@dataclass
class Meta:
    """What is known about each row besides its code."""

    names: list[str] | None = None
    labels: np.ndarray | None = None
    classes: tuple[str, ...] | None = None

    def columns(self) -> list[str]:
        cols = []
        if self.names is not None:
            cols.append("name")
        if self.labels is not None:
            cols.append("label")
            if self.classes is not None:
                cols.append("class")
        return cols

    def row(self, i: int) -> list[Any]:
        out: list[Any] = []
        if self.names is not None:
            out.append(self.names[i])
        if self.labels is not None:
            k = int(self.labels[i])
            out.append(k)
            if self.classes is not None:
                out.append(self.classes[k] if 0 <= k < len(self.classes) else "")
        return out


class CodeWriter:
    """Write ``n`` codes of width ``latent`` to ``path`` batch by batch; ``commit()`` puts the file in place."""

    def __init__(self, path: str | os.PathLike, n: int, latent: int, meta: Meta | None = None):
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in FORMATS:
            raise OutputError(f"{self.path}: unknown output format {self.path.suffix or '(none)'!r}; name the file "
                              f"*.npy, *.csv or *.parquet")
        if self.path.is_dir():
            raise OutputError(f"{self.path} is a folder; give a file name such as codes.npy")
        write_target(self.path)  # a dangling link, a link loop, a path under a file: one line, before the work
        self.n, self.latent, self.meta = n, latent, meta or Meta()
        self.columns = self.meta.columns()
        self.zcols = [f"z{j}" for j in range(latent)]
        self.temps: list[tuple[Path, Path]] = []  # (temporary file, final path)
        self.written = 0
        try:
            self._open()
        except OSError as err:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}") from None

    def _temp(self, final: Path) -> Path:
        tmp = temp_beside(final)
        self.temps.append((tmp, final))
        return tmp

    def _open(self) -> None:
        tmp = self._temp(self.path)
        if self.suffix == ".npy":  # header, then rows appended in order: memory stays bounded by one batch
            self.fh = tmp.open("wb")
            np.lib.format.write_array_header_1_0(
                self.fh, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                          "shape": (self.n, self.latent)})
        elif self.suffix == ".csv":
            self.fh = tmp.open("w", newline="", encoding="utf-8")
            self.csv = csv.writer(self.fh)
            self.csv.writerow(self.columns + self.zcols)
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise OutputError("writing .parquet needs pyarrow: pip install 'aelab[parquet]' (or use .npy or "
                                  ".csv)") from None
            fields = []
            if "name" in self.columns:
                fields.append(pa.field("name", pa.string()))
            if "label" in self.columns:
                fields.append(pa.field("label", pa.int64()))
            if "class" in self.columns:
                fields.append(pa.field("class", pa.string()))
            fields += [pa.field(z, pa.float32()) for z in self.zcols]
            self.schema = pa.schema(fields)
            self.pq = pq.ParquetWriter(str(tmp), self.schema)

    def write(self, start: int, codes: np.ndarray) -> None:
        codes = np.asarray(codes, dtype=np.float32)
        stop = start + len(codes)
        try:
            if self.suffix == ".npy":
                if start != self.written:
                    raise OutputError(f"{self.path}: rows must be written in order (got {start}, expected "
                                      f"{self.written})")
                self.fh.write(np.ascontiguousarray(codes, dtype="<f4").tobytes())
            elif self.suffix == ".csv":
                text = np.char.mod("%.9g", codes)
                for i, row in enumerate(text):
                    self.csv.writerow(self.meta.row(start + i) + row.tolist())
            else:
                import pyarrow as pa

                cols: list[Any] = []
                if "name" in self.columns:
                    cols.append(pa.array(self.meta.names[start:stop], pa.string()))  # type: ignore[index]
                if "label" in self.columns:
                    cols.append(pa.array(np.asarray(self.meta.labels[start:stop], dtype=np.int64)))  # type: ignore
                if "class" in self.columns:
                    cols.append(pa.array([self.meta.row(i)[-1] for i in range(start, stop)], pa.string()))
                cols += [pa.array(codes[:, j]) for j in range(self.latent)]
                self.pq.write_table(pa.Table.from_arrays(cols, schema=self.schema))
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}") from None
        self.written = max(self.written, stop)

    def commit(self) -> list[Path]:
        """Close and rename into place; returns the files written (codes, then the sidecar if any)."""
        if self.written != self.n:
            raise OutputError(f"{self.path}: {self.written} of {self.n} codes written")
        self._close()
        if self.suffix == ".npy" and self.columns:
            side = sidecar_path(self.path)
            tmp = self._temp(side)
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["index", *self.columns])
            for i in range(self.n):
                w.writerow([i, *self.meta.row(i)])
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        elif self.suffix == ".npy" and sidecar_path(self.path).exists():
            sidecar_path(self.path).unlink()  # an old sidecar would describe other rows
        for tmp, final in self.temps:
            move_into_place(tmp, final)  # through a link, into a device or FIFO
        done = [final for _, final in self.temps]
        self.temps = []
        return done

    def _close(self) -> None:
        if self.suffix in (".npy", ".csv") and hasattr(self, "fh"):
            self.fh.close()
        elif self.suffix == ".parquet" and hasattr(self, "pq"):
            self.pq.close()

    def abort(self) -> None:
        """Remove every temporary file."""
        try:
            self._close()
        except Exception:  # noqa: BLE001 - cleaning up after an error already on its way
            pass
        for tmp, _ in self.temps:
            tmp.unlink(missing_ok=True)
        self.temps = []

    def __enter__(self) -> CodeWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


# ------------------------------------------------------------------------------------------ reading
@dataclass
class CodeTable:
    codes: np.ndarray           # (n, k); a memory map for .npy
    meta: Meta
    label: str


def read_codes(path: str | os.PathLike) -> CodeTable:
    """Codes written by ``aelab encode`` (.npy with optional sidecar, .csv, .parquet), or any (n, k) array."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; give codes written by 'aelab encode' (.npy, .csv or .parquet)")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"{p}: not a readable .npy array ({str(err).splitlines()[0][:80]})") from None
        if arr.ndim != 2 or arr.dtype.kind not in "uif":
            raise InputError(f"{p}: holds a {arr.dtype} array of shape {arr.shape}; codes are numbers of shape "
                             f"(n, latent)")
        meta = _read_sidecar(sidecar_path(p), len(arr))
        return CodeTable(arr, meta, str(p))
    if suffix == ".csv":
        return _read_csv(p)
    if suffix == ".parquet":
        return _read_parquet(p)
    raise InputError(f"{p}: unknown codes format {p.suffix or '(none)'!r}; give a .npy, .csv or .parquet file")


def _meta_from_columns(cols: dict[str, list[Any]]) -> Meta:
    meta = Meta()
    if "name" in cols:
        meta.names = [str(v) for v in cols["name"]]
    if "label" in cols:
        try:
            meta.labels = np.asarray([int(v) for v in cols["label"]], dtype=np.int64)
        except (TypeError, ValueError):
            meta.labels = None
    return meta


def _read_sidecar(side: Path, n: int) -> Meta:
    if not side.is_file():
        return Meta()
    with side.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != n:
        return Meta()
    cols = {k: [r[k] for r in rows] for k in (rows[0].keys() if rows else [])}
    return _meta_from_columns(cols)


def _split_columns(header: list[str], label: str) -> tuple[list[int], list[str]]:
    zcols = [i for i, h in enumerate(header) if h.startswith("z") and h[1:].isdigit()]
    if not zcols:
        raise InputError(f"{label}: no code columns (z0, z1, ...); give codes written by 'aelab encode'")
    return zcols, [h for h in header if h in META_COLUMNS]


def _read_csv(p: Path) -> CodeTable:
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{p}: empty file; give codes written by 'aelab encode'") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise InputError(f"{p}: not a CSV file ({err})") from None
        zcols, _ = _split_columns(header, str(p))
        meta_idx = {h: i for i, h in enumerate(header) if h in META_COLUMNS}
        codes: list[list[float]] = []
        cols: dict[str, list[Any]] = {h: [] for h in meta_idx}
        try:
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise InputError(f"{p}: line {line} has {len(row)} fields, the header {len(header)}")
                try:
                    codes.append([float(row[i]) for i in zcols])
                except ValueError:
                    raise InputError(f"{p}: line {line} holds a code value that is not a number") from None
                for h, i in meta_idx.items():
                    cols[h].append(row[i])
        except (csv.Error, UnicodeDecodeError) as err:
            raise InputError(f"{p}: not a readable CSV file ({err})") from None
    arr = np.asarray(codes, dtype=np.float32).reshape(len(codes), len(zcols))
    return CodeTable(arr, _meta_from_columns(cols), str(p))


def _read_parquet(p: Path) -> CodeTable:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading .parquet needs pyarrow: pip install 'aelab[parquet]'") from None
    try:
        table = pq.read_table(p)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise InputError(f"{p}: not a readable parquet file ({str(err).splitlines()[0][:80]})") from None
    zcols, _ = _split_columns(table.column_names, str(p))
    names = [table.column_names[i] for i in zcols]
    arr = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in names], axis=1) \
        if len(table) else np.zeros((0, len(names)), np.float32)
    cols = {h: table.column(h).to_pylist() for h in table.column_names if h in META_COLUMNS}
    return CodeTable(arr, _meta_from_columns(cols), str(p))
