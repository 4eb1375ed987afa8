"""The Markdown beside bench_primitives.py's JSON: the same figures, for people."""

from __future__ import annotations

from typing import Any

from onednn_log import PLAIN_NAMES

LAYERS_SHOWN = 30


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.2f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _n(v: float) -> str:
    return f"{v:g}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    right = [h.startswith(("ms", "share", "per")) or h.endswith("/step") for h in head]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _creates(run: dict[str, Any]) -> str:
    by_op: dict[str, float] = {}
    for c in run["creates"]:
        by_op[c["op"]] = by_op.get(c["op"], 0.0) + c["per_step"]
    return ", ".join(f"{op.removeprefix('create:')} {_n(round(n, 2))}" for op, n in sorted(by_op.items())) or "0"


def _threads(run: dict[str, Any]) -> str:
    d = run.get("onednn", {})
    v = run["verbose_run"]
    pools = (f"torch {v['torch_threads']}" if "torch_threads" in v else
             f"TF intra {v.get('intra_op_threads')}, inter {v.get('inter_op_threads')}")
    return f"oneDNN {d.get('runtime', '?')} nthr {d.get('nthr', '?')}; {pools}"


def summary(r: dict[str, Any]) -> list[str]:
    head = ["framework", "precision", "ms/step (clean)", "ms/step (verbose)", "ms oneDNN exec/step",
            "share of verbose step", "primitives/step", "reorders/step", "ms reorders/step", "creations/step",
            "threads"]
    rows = []
    for run in r["runs"]:
        reorders = [x for x in run["by_kind"] if x["kind"] == "reorder"]
        rows.append([run["framework"], run["precision"], _ms(run["wall_ms_per_step"]),
                     _ms(run["wall_ms_per_step_verbose"]), _ms(run["exec_ms_per_step"]),
                     _pct(run["onednn_share_of_verbose_wall"]), _n(run["exec_per_step"]),
                     _n(round(sum(x["per_step"] for x in reorders), 2)),
                     _ms(sum(x["ms_per_step"] for x in reorders)), _creates(run), _threads(run)])
    return _table(head, rows)


def one_run(run: dict[str, Any]) -> list[str]:
    out = [f"## {run['framework']}, {run['precision']}", "",
           f"oneDNN: {run['onednn'].get('version', '?')}; ISA: {run['onednn'].get('isa', '?')}. "
           f"Primitive lines not understood in the window: {run['unread_lines']}.", "",
           "By kind, implementation and propagation:", ""]
    out += _table(["kind", "implementation", "propagation", "per step", "ms/step", "share of oneDNN"],
                  [[x["kind"], f"`{x['impl']}`", x["prop"], _n(x["per_step"]), _ms(x["ms_per_step"]),
                    _pct(x["share"])] for x in run["by_kind"]])
    out += ["By memory layout of the data arguments (blocked: any of src, weights, dst in a blocked format):", ""]
    out += _table(["layout", "data types", "per step", "ms/step", "share of oneDNN"],
                  [[x["layout"], x["dtypes"], _n(x["per_step"]), _ms(x["ms_per_step"]), _pct(x["share"])]
                   for x in run["by_layout"]])
    layers = run["by_layer"]
    out += [f"By layer (every primitive other than reorders; {min(len(layers), LAYERS_SHOWN)} of {len(layers)}, "
            f"slowest first):", ""]
    out += _table(["kind", "propagation", "problem", "implementation", "formats (src, weights, dst)", "post-ops",
                   "per step", "ms/step"],
                  [[x["kind"], x["prop"], f"`{x['problem']}`", f"`{x['impl']}`", f"`{x['formats']}`",
                    x["post_ops"] or "–", _n(x["per_step"]), _ms(x["ms_per_step"])] for x in layers[:LAYERS_SHOWN]])
    if run["reorders"]:
        out += ["Reorders (from, to, dimensions):", ""]
        out += _table(["from", "to", "dims", "per step", "ms/step"],
                      [[f"`{x['src']}`", f"`{x['dst']}`", x["problem"], _n(x["per_step"]), _ms(x["ms_per_step"])]
                       for x in run["reorders"]])
    if run["creates"]:
        out += ["Primitive creations in the counted steps (a cache hit is a lookup that still costs time):", ""]
        out += _table(["operation", "kind", "per step", "ms/step"],
                      [[x["op"], x["kind"], _n(x["per_step"]), _ms(x["ms_per_step"])] for x in run["creates"]])
    clean = run["clean_run"]
    if clean.get("top_ops"):
        out += [f"torch.profiler over {clean.get('profiled_wall_ms_per_step')} ms/step (profiled, clean run): "
                f"self CPU {clean.get('profile_self_cpu_ms_per_step')} ms/step, top operators:", ""]
        out += _table(["operator", "ms self/step", "share of self CPU", "calls/step"],
                      [[f"`{x['op']}`", _ms(x["self_ms_per_step"]), _pct(x["share"]), _n(round(x["calls_per_step"], 2))]
                       for x in clean["top_ops"]])
    return out


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    quick = " (quick run: too few steps to quote)" if r.get("quick") else ""
    lines = [f"# oneDNN primitives per training step: preset {r['preset']}, batch {r['batch']}{quick}", "",
             f"{r['date']}. `{r['command']}`", "",
             f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}, TensorFlow "
             f"{m.get('tensorflow') or 'absent'}, Keras {m.get('keras') or 'absent'}; {r['threads']} threads each. "
             f"Load average at start {m.get('load_average_start')}, at end {m.get('load_average_end')} (a load "
             f"above the CPU count means other processes shared the machine).", "",
             f"{r['steps']} counted steps after {r['warmup']} of warm-up, each framework and precision in its own "
             f"processes: one under `ONEDNN_VERBOSE=2` (the primitive figures, and the 'verbose' wall time), one "
             f"without (the 'clean' wall time; aelab: then a torch.profiler pass). Times per training step. "
             f"TensorFlow runs independent operations at once (inter-op threads): its primitives' times can add "
             f"up to more than its step.", ""]
    remarks = [f"- note: {n}" for n in r.get("notes", [])] + [f"- error: {e}" for e in r.get("errors", [])]
    lines += [*remarks, ""] if remarks else []
    lines += ["Format tags (oneDNN names the dimensions a, b, c, d in logical order, N C H W for data and O I H W "
              "for weights; a capital letter with a number is a blocked dimension): "
              + ", ".join(f"`{k}` = {v}" for k, v in PLAIN_NAMES.items()) + ".", ""]
    lines += summary(r)
    for run in r["runs"]:
        lines += one_run(run)
    return "\n".join(lines).rstrip() + "\n"
