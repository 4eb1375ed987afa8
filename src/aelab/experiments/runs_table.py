"""``aelab runs [FOLDER]``: one table of every run folder under a folder, read from each run's small records.

A run is found by its ``config.yaml`` (or aelab's mark), at any depth; hidden folders (staged writes, ``.git``)
and symbolic links to folders are not entered. Each row is read from the records alone, never a checkpoint's
tensors: ``metrics.json`` (an evaluated run: its model, latent size, data, epochs, precision, training time and
test metrics beside PCA's, as the evaluation wrote them), else ``config.yaml`` and the header of
``last.safetensors`` (``checkpoints.peek``: where training stopped), and the lock (``lock_holder``: is a process
writing the run now). A damaged or foreign folder is a row saying so, never an error.

The state of a run:

- ``finished``: evaluated (a readable metrics.json);
- ``trained``: training ended (completed, early stopping or time budget) but it was not evaluated;
- ``running``: a process holds the run's lock now (training, evaluating or writing the report);
- ``stopped``: a checkpoint after at least one epoch, no process on it: ``aelab train --resume`` continues it;
- ``failed``: it never finished an epoch (killed, crashed or diverged in the first), or never began;
- ``damaged``: a record aelab wrote cannot be read back (the note says which and the fix);
- ``foreign``: a folder holding a ``config.yaml`` that aelab did not write.

The checkpoint's header does not say why training stopped early (a kill, a crash or a diverged loss all leave a
resumable checkpoint), so a run that diverged after its first epoch shows as ``stopped``.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from aelab.checkpoints import peek
from aelab.config import RunConfig
from aelab.errors import AelabError, ConfigError
from aelab.files import LOCK_NAME
from aelab.runs import Run

FORMATS = ("table", "md", "csv", "json")
STATES = ("finished", "trained", "running", "stopped", "failed", "damaged", "foreign")


@dataclass(frozen=True)
class Field:
    key: str
    header: str
    kind: type = str  # str, int or float: how a filter compares and how the cell is aligned
    fmt: str = "{}"


FIELDS: tuple[Field, ...] = (
    Field("name", "run"),
    Field("model", "model"),
    Field("latent", "latent", int),
    Field("data", "data"),
    Field("epochs", "epochs", int),
    Field("precision", "precision"),
    Field("state", "state"),
    Field("ssim", "SSIM", float, "{:.4f}"),
    Field("pca_ssim", "PCA SSIM", float, "{:.4f}"),
    Field("psnr", "PSNR dB", float, "{:.2f}"),
    Field("pca_psnr", "PCA PSNR", float, "{:.2f}"),
    Field("mse", "MSE", float, "{:.5f}"),
    Field("pca_mse", "PCA MSE", float, "{:.5f}"),
    Field("minutes", "minutes", float, "{:.1f}"),
    Field("note", "note"),
    Field("path", "path"),
)
BY_KEY = {f.key: f for f in FIELDS}
SHOWN = tuple(f for f in FIELDS if f.key != "path")  # the table and Markdown leave the path out (csv/json keep it)
OPS = ("<=", ">=", "!=", "==", "=", "<", ">")
_EXPR = re.compile(r"^([A-Za-z_]+)\s*(<=|>=|!=|==|=|<|>)\s*(.*)$")


# ------------------------------------------------------------------------------------------ finding runs
def find_runs(folder: Path) -> Iterator[Path]:
    """Every folder under ``folder`` (itself included) holding a run's config or mark, in name order."""
    probe = Run(folder)
    names = {probe.config_file.name, probe.mark.name}
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable or vanished while walking: nothing to list there
            continue
        if any(e.name in names for e in entries):
            yield Path(here)
        stack.extend(Path(e.path) for e in reversed(entries)
                     if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


# ------------------------------------------------------------------------------------------ one row
def lock_holder(folder: Path) -> str | None:
    """Who holds the write lock of ``folder`` now ("pid N on HOST", as ``files.folder_lock`` writes it), or None;
    a probe that never waits, never creates the lock file and never writes.

    The holder's line is read first: a lock released cleanly leaves the file empty, so most runs are answered
    without touching the lock (a writer starting in the same microsecond would otherwise find it taken). A line
    left by a writer killed with -9 (the kernel released its lock) is checked with a shared non-blocking flock on
    a separate descriptor, released at once.
    """
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return text
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError:  # not a plain file (a folder of that name): no lock of aelab's
        return None
    finally:
        os.close(fd)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value) else None


def _count(value: Any) -> int | None:
    n = _number(value)
    return int(n) if n is not None else None


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _minutes(seconds: Any) -> float | None:
    s = _number(seconds)
    return round(s / 60.0, 2) if s is not None else None


def _data_name(dataset: Any) -> str | None:
    """The short name of a data set spec (the built-in's name, or the stem of the user's path)."""
    return RunConfig(dataset=dataset).dataset_name if isinstance(dataset, str) and dataset else None


def _from_metrics(row: dict[str, Any], m: Any) -> bool:
    """Fill ``row`` from a metrics.json; False when it is not one of this version (missing or odd fields)."""
    try:
        info, ae, pca = m["run"], m["autoencoder"]["overall"], m["pca"]["overall"]
        row.update(model=str(info["model"]), latent=int(info["latent"]), data=_data_name(info.get("dataset")),
                   epochs=_count(info.get("epochs")), precision=_text(info.get("precision")),
                   minutes=_minutes(info.get("train_seconds")))
        for key in ("ssim", "psnr", "mse"):
            row[key], row[f"pca_{key}"] = _number(ae[key]), _number(pca[key])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _from_checkpoint(row: dict[str, Any], run: Run) -> None:
    """State, epochs, minutes and precision of a run without metrics, from its last checkpoint's header."""
    meta = peek(run.last)
    loop = meta.get("loop") if meta else None
    if not isinstance(loop, dict):
        if run.last.is_file():
            row.update(state="damaged", note=f"{run.last.name} cannot be read; resume from an earlier run or train "
                                             f"again")
        else:
            row.update(state="failed", note="no checkpoint: training never began")
        return
    row.update(epochs=_count(loop.get("epoch")), minutes=_minutes(loop.get("elapsed")),
               precision=_text(meta.get("precision")) or row["precision"])
    hp = meta.get("hparams")
    if isinstance(hp, dict) and row["model"] is None:  # a damaged config.yaml: the checkpoint's own description
        row.update(model=_text(hp.get("model")), latent=_count(hp.get("latent")))
    if loop.get("stopped"):
        row.update(state="trained", note=f"training ended ({loop['stopped']}), not evaluated: aelab evaluate "
                                         f"{run.path}")
    elif not loop.get("epoch"):
        row.update(state="failed", note=f"never finished an epoch; aelab train --resume {run.path} retries it")
    else:
        row.update(state="stopped", note=f"aelab train --resume {run.path} continues it")


def read_row(path: Path, root: Path) -> dict[str, Any]:
    """The row of the run folder ``path`` (its name relative to ``root``); never raises for a bad folder."""
    run = Run(path)
    row: dict[str, Any] = {f.key: None for f in FIELDS}
    name = path.relative_to(root).as_posix() if path != root else path.resolve().name
    row.update(name=name, path=str(path))
    if not run.is_run():
        row.update(state="foreign", note=f"{run.config_file.name} not written by aelab (no aelab mark or checkpoint)")
        return row
    holder = lock_holder(path)
    metrics: Any = None
    if run.metrics.is_file():
        try:
            metrics = json.loads(run.metrics.read_bytes())
        except (OSError, ValueError, RecursionError):
            metrics = False
    if metrics and _from_metrics(row, metrics):
        row["state"] = "finished"
    else:  # the run's own description: its configuration, then its checkpoint
        problem = None
        try:
            cfg = run.config()
        except (AelabError, OSError, ValueError) as err:
            problem = str(err) if isinstance(err, AelabError) else f"{run.config_file} cannot be read"
        else:
            row.update(model=cfg.model, latent=cfg.latent, data=cfg.dataset_name, precision=cfg.precision)
        _from_checkpoint(row, run)
        if problem:
            row.update(state="damaged", note=problem)
        elif metrics is not None:
            row.update(state="damaged", note=f"{run.metrics} is damaged; rebuild it with 'aelab evaluate {run.path}'")
    if holder:
        row.update(state="running", note=f"held by {holder}")
    return row


def runs_table(folder: str | os.PathLike = "runs") -> list[dict[str, Any]]:
    """The rows of every run under ``folder`` (recursively), in path order."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give the folder holding your runs (aelab train writes them "
                          f"under runs/)")
    return [read_row(p, root) for p in find_runs(root)]


# ------------------------------------------------------------------------------------------ filter and sort
@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: str | float

    def holds(self, row: dict[str, Any]) -> bool:
        have = row.get(self.key)
        if isinstance(self.value, float):
            if have is None:
                return False
            have = float(have)
            return {"<": have < self.value, "<=": have <= self.value, ">": have > self.value,
                    ">=": have >= self.value, "=": have == self.value, "!=": have != self.value}[self.op]
        match = have is not None and fnmatchcase(str(have), self.value)
        return match if self.op == "=" else not match


def parse_filter(text: str) -> list[Condition]:
    """``KEY OP VALUE`` expressions separated by spaces (all must hold): ``model=vae latent>=16 ssim>0.8``;
    ``=`` on text takes shell-style wildcards (``model=conv*``). ``ConfigError`` naming the valid keys."""
    keys = ", ".join(f.key for f in FIELDS)
    out = []
    for expr in text.split():
        m = _EXPR.match(expr)
        if not m or not m.group(3):
            raise ConfigError(f"filter {expr!r} is not KEY=VALUE, KEY>=N, KEY<N, ... (e.g. 'model=vae latent>=16'); "
                              f"keys: {keys}")
        key, op, raw = m.group(1).lower(), "=" if m.group(2) == "==" else m.group(2), m.group(3)
        if key not in BY_KEY:
            raise ConfigError(f"filter {expr!r}: unknown key {key!r}; keys: {keys}")
        if BY_KEY[key].kind is str:
            if op not in ("=", "!="):
                raise ConfigError(f"filter {expr!r}: {key} is text, compare it with = or != (wildcards allowed); "
                                  f"numbers are: {', '.join(f.key for f in FIELDS if f.kind is not str)}")
            out.append(Condition(key, op, raw))
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"filter {expr!r}: {key} is a number, {raw!r} is not; e.g. {key}{op}16") from None
        out.append(Condition(key, op, value))
    return out


def parse_sort(text: str) -> list[tuple[str, bool]]:
    """``KEY`` (ascending) or ``-KEY`` (descending), several separated by commas: ``-ssim,name``."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        key = part.lstrip("-+").lower()
        if key not in BY_KEY:
            raise ConfigError(f"--sort {part!r}: unknown key {key!r}; give KEY or -KEY (descending), keys: "
                              f"{', '.join(f.key for f in FIELDS)}")
        out.append((key, part.startswith("-")))
    return out


def select(rows: Sequence[dict[str, Any]], filters: Sequence[str] = (), sort: str = "name"
           ) -> list[dict[str, Any]]:
    """The rows every filter holds for, sorted (missing values last, whatever the direction)."""
    conditions = [c for text in filters for c in parse_filter(text)]
    order = parse_sort(sort)
    kept = [r for r in rows if all(c.holds(r) for c in conditions)]
    for key, descending in reversed(order):  # stable sorts, the last key first
        present = [r for r in kept if r.get(key) is not None]
        missing = [r for r in kept if r.get(key) is None]
        text = BY_KEY[key].kind is str
        present.sort(key=lambda r: str(r[key]) if text else float(r[key]), reverse=descending)
        kept = present + missing
    return kept


# ------------------------------------------------------------------------------------------ output
def _cell(row: dict[str, Any], f: Field) -> str:
    value = row.get(f.key)
    if value is None:
        return "-"
    try:
        return f.fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[Field]:
    return [f for f in SHOWN if f.key != "note" or any(r.get("note") for r in rows)]


def render(rows: Sequence[dict[str, Any]], fmt: str = "table") -> str:
    """``rows`` as an aligned text table, a Markdown table, CSV or JSON (csv and json: raw values, with paths)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[f.key for f in FIELDS], extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    cols = _columns(rows)
    cells = [[_cell(r, f) for f in cols] for r in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(f.header for f in cols) + " |",
                 "|" + "|".join("---" if f.kind is str else "---:" for f in cols) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    widths = [max([len(f.header)] + [len(line[i]) for line in cells]) for i, f in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if f.kind is str else v.rjust(w) for v, w, f in zip(values, widths, cols,
                                                                                          strict=True)).rstrip()
    return "\n".join([line([f.header for f in cols]), *(line(c) for c in cells)]) + "\n"


def summary(rows: Sequence[dict[str, Any]]) -> str:
    """'12 runs: 9 finished, 2 running, 1 damaged'."""
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    return f"{len(rows)} run{'s' if len(rows) != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")
