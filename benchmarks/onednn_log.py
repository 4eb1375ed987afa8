"""oneDNN's verbose log (``ONEDNN_VERBOSE=2``), read back: one record per primitive line, the lines between two
marker lines (the counted steps), and a summary per primitive kind, per layer and per reorder.

The format is oneDNN 3.x's (torch 2.13 bundles oneDNN 3.12, TensorFlow 2.21 its own 3.x; both print ``v1``)::

    onednn_verbose,v1,primitive,<operation>,<engine>,<kind>,<implementation>,<propagation>,<memory descriptors>,
        <attributes>,<auxiliary>,<problem>,<time ms>

``operation`` is ``exec`` (a primitive ran; time = its execution) or ``create:cache_miss`` / ``create:cache_hit``
(a primitive was made, or found in the primitive cache; time = that). A memory descriptor reads
``arg:dt:properties:format_kind:tag:strides:flags`` (``src:f32::blocked:acdb::f0``); the ``gemm_api`` lines
join the first two with ``_`` (``src_f32::blocked:ba:f0``). A timestamp (``ONEDNN_VERBOSE_TIMESTAMP=1``) or a
missing ``v1`` before ``primitive`` is accepted. Graph-API lines (``graph,exec``) are read as kind
``graph:<partition kind>``. Anything else (info lines, the frameworks' own output) is not a record.

Pure functions of text, no timing of their own: tests/benchmarks/test_bench_primitives.py feeds them real lines.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PREFIX = "onednn_verbose,"
BEGIN = "AELAB_PRIMITIVES_BEGIN"  # written by the child processes around the counted steps
END = "AELAB_PRIMITIVES_END"
# the tags people know, for the legend and the tables (oneDNN names dimensions a, b, c, d in logical order)
PLAIN_NAMES = {"abcd": "NCHW / OIHW", "acdb": "NHWC / OHWI", "cdba": "HWIO", "bcda": "IHWO", "ab": "NC / OI",
               "ba": "CN / IO", "a": "vector"}


@dataclass(frozen=True)
class Md:
    """One memory descriptor: argument (src, wei, dst, bia, ws, diff_src...), data type, format tag."""

    arg: str
    dt: str
    tag: str

    @property
    def layout(self) -> str:
        """``plain`` (a permutation of the dimensions: abcd, acdb, ...), ``blocked`` (aBcd16b, ABcd16b16a2b...),
        or ``undef`` (the argument is absent)."""
        if self.dt == "undef" or not self.tag:
            return "undef"
        return "plain" if re.fullmatch(r"[a-z]+", self.tag) else "blocked"

    def text(self) -> str:
        return f"{self.dt}:{self.tag}"


@dataclass(frozen=True)
class Record:
    """One primitive line."""

    op: str  # exec, create:cache_miss, create:cache_hit
    engine: str
    kind: str  # convolution, reorder, pooling, eltwise, inner_product, matmul, gemm_api, graph:<kind>...
    impl: str  # brg_conv_fwd:avx512_core, jit:uni, x64:gemm:jit...
    prop: str  # forward_training, backward_data, backward_weights, undef
    mds: tuple[Md, ...]
    attrs: str
    aux: str  # alg:convolution_direct, alg:pooling_max...
    problem: str  # mb256_ic32oc64_ih14oh14kh3..., 128x64x3x3
    ms: float

    def md(self, arg: str) -> Md | None:
        return next((m for m in self.mds if m.arg == arg), None)

    @property
    def post_ops(self) -> str:
        """The fused post-ops (``eltwise_relu``, ``sum+eltwise_relu``...), '' when none."""
        for a in self.attrs.split():
            if a.startswith("attr-post-ops:"):
                return a.split(":", 1)[1]
        return ""

    def formats(self) -> str:
        """``src:f32:acdb wei:f32:Adcb16a dst:f32:acdb``: the data arguments (bias, workspace left out)."""
        return " ".join(f"{m.arg}:{m.text()}" for m in self.mds if m.arg in ("src", "wei", "dst") and
                        m.layout != "undef")


def parse_md(token: str) -> Md:
    parts = token.split(":")
    if "_" in parts[0] and len(parts) == 5:  # gemm_api: src_f32::blocked:ba:f0
        arg, dt = parts[0].rsplit("_", 1)
        return Md(arg, dt, parts[3])
    if len(parts) >= 5:  # src:f32::blocked:acdb::f0
        return Md(parts[0], parts[1], parts[4])
    return Md(parts[0], parts[1] if len(parts) > 1 else "", "")


def parse_line(line: str) -> Record | None:
    """The record of one verbose line, or None for any other line (info lines, other output, a line of an
    unknown shape)."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    fields = line.split(",")
    head = fields[1:4]  # the section name follows an optional timestamp and/or version
    for section in ("primitive", "graph"):
        if section in head:
            rest = fields[1 + head.index(section) + 1:]
            break
    else:
        return None
    try:
        ms = float(rest[-1])
    except (ValueError, IndexError):
        return None
    if section == "graph":  # exec,engine,partition_id,partition_kind,op_names,formats,tensors,fpmath,impl,backend,t
        if len(rest) != 11 or rest[0] != "exec":
            return None
        return Record(rest[0], rest[1], f"graph:{rest[3]}", rest[8] or rest[9], "", (), rest[7], rest[4], rest[6], ms)
    if len(rest) != 10 or rest[0] == "info":
        return None
    op, engine, kind, impl, prop, mds, attrs, aux, problem, _ = rest
    return Record(op, engine, kind, impl, prop, tuple(parse_md(t) for t in mds.split()), attrs, aux, problem, ms)


def window(lines: Iterable[str], begin: str = BEGIN, end: str = END) -> list[str]:
    """The lines between the first line holding ``begin`` and the next holding ``end``; ValueError when either
    is missing (the child died, or a marker was lost)."""
    out: list[str] | None = None
    for line in lines:
        if out is None:
            if begin in line:
                out = []
        elif end in line:
            return out
        else:
            out.append(line)
    raise ValueError(f"marker {begin if out is None else end!r} not found in the log")


def info(lines: Iterable[str]) -> dict[str, Any]:
    """oneDNN's own info lines: version, threading runtime and thread count, ISA."""
    out: dict[str, Any] = {}
    for line in lines:
        if not line.startswith(PREFIX) or ",info," not in line:
            continue
        body = line.strip().split(",info,", 1)[1]
        if body.startswith("oneDNN "):
            out["version"] = body
        elif body.startswith("cpu,runtime:"):
            for part in body.split(",")[1:]:
                key, _, value = part.partition(":")
                out[key] = value
        elif body.startswith("cpu,isa:"):
            out["isa"] = body.split("isa:", 1)[1]
    return out


def _add(table: dict[tuple, dict[str, float]], key: tuple, ms: float) -> None:
    row = table[key]
    row["count"] += 1
    row["ms"] += ms


def _rows(table: dict[tuple, dict[str, float]], names: tuple[str, ...], steps: int, total: float
          ) -> list[dict[str, Any]]:
    rows = [{**dict(zip(names, key, strict=True)), "per_step": round(v["count"] / steps, 2),
             "ms_per_step": round(v["ms"] / steps, 3), "share": round(v["ms"] / total, 4) if total else None}
            for key, v in table.items()]
    return sorted(rows, key=lambda r: r["ms_per_step"], reverse=True)


def summarize(records: Iterable[Record], steps: int) -> dict[str, Any]:
    """Per step (the window held ``steps`` training steps): executions by kind / implementation / propagation,
    by layer (kind, implementation, propagation, problem, formats, post-ops), the reorders by their source and
    destination formats, the primitive creations (cache hits and misses), and the totals. ``share``: of the
    window's oneDNN execution time."""
    steps = max(steps, 1)
    kinds: dict[tuple, dict[str, float]] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    layers: dict[tuple, dict[str, float]] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    reorders: dict[tuple, dict[str, float]] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    creates: dict[tuple, dict[str, float]] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    layouts: dict[tuple, dict[str, float]] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    total = 0.0
    execs = 0
    recs = list(records)
    for r in recs:
        if r.op != "exec":
            _add(creates, (r.op, r.kind), r.ms)
            continue
        total += r.ms
        execs += 1
        _add(kinds, (r.kind, r.impl or "-", r.prop), r.ms)
        if r.kind == "reorder":
            src, dst = r.md("src"), r.md("dst")
            _add(reorders, (src.text() if src else "?", dst.text() if dst else "?", r.problem), r.ms)
        else:
            _add(layers, (r.kind, r.impl or "-", r.prop, r.problem, r.formats(), r.post_ops), r.ms)
        data = [m for m in r.mds if m.arg in ("src", "wei", "dst") and m.layout != "undef"]
        _add(layouts, ("blocked" if any(m.layout == "blocked" for m in data) else "plain",
                       "/".join(sorted({m.dt for m in data}))), r.ms)
    return {
        "steps": steps,
        "exec_per_step": round(execs / steps, 2),
        "exec_ms_per_step": round(total / steps, 3),
        "by_kind": _rows(kinds, ("kind", "impl", "prop"), steps, total),
        "by_layer": _rows(layers, ("kind", "impl", "prop", "problem", "formats", "post_ops"), steps, total),
        "reorders": _rows(reorders, ("src", "dst", "problem"), steps, total),
        "by_layout": _rows(layouts, ("layout", "dtypes"), steps, total),
        "creates": [{"op": r["op"], "kind": r["kind"], "per_step": r["per_step"], "ms_per_step": r["ms_per_step"]}
                    for r in _rows(creates, ("op", "kind"), steps, 0.0)],
    }


def read(lines: list[str], steps: int) -> dict[str, Any]:
    """The summary of the marked window of a whole log, with oneDNN's info lines and the count of primitive
    lines in the window that could not be read (0 when the format is the one expected)."""
    inside = window(lines)
    records = [parse_line(ln) for ln in inside]
    unread = sum(1 for ln, r in zip(inside, records, strict=True) if r is None and ln.startswith(PREFIX)
                 and ",info," not in ln)
    return {"onednn": info(lines), "unread_lines": unread,
            **summarize((r for r in records if r is not None), steps)}
