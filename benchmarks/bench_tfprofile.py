"""Issue 32: where Keras's training step goes, by TensorFlow op, from the TensorFlow profiler (the other half of
``bench_primitives.py``, whose oneDNN log shows only TensorFlow's oneDNN calls).

    AELAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_tfprofile.py --xprof-python /tmp/x/bin/python
    ... --presets default --precisions fp32 --steps 40

For each preset (``seed-64``: the base model, batch 256; ``default``: conv-modified with its loss, batch 64) and
precision, ``bench_keras.py``'s worker runs one untimed ``model.fit`` epoch of ``--steps`` batches of real
Fashion-MNIST, then the same epoch under ``tf.profiler.experimental`` (``_Worker.profile``). The trace is turned
into per-op self times by XProf's ``framework_op_stats`` tool. XProf (the profiler's own converter, package
``xprof``) pins its own dependencies, so it runs in the Python given by ``--xprof-python`` (make one with
``python3 -m venv /tmp/x && /tmp/x/bin/pip install xprof==2.24.2``). Reported: each op type's self time per step
(summed over TensorFlow's threads, which run independent ops at once, so the sum can exceed the step) and the
wall time of the profiled epoch. Writes ``<out>/<date>-<machine>-tfprofile.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import Parser, fail, load_average, machine_info, machine_slug, usable_cpus, write_results  # noqa: E402, I001

FORMAT = "aelab-bench-tfprofile-1"
# XProf's converter, run in --xprof-python: every trace file under argv[1] -> framework_op_stats rows (JSON) on stdout
CONVERT = """
import glob, sys
from xprof.convert import raw_to_tool_data
paths = glob.glob(sys.argv[1] + "/**/*.xplane.pb", recursive=True)
data, _ = raw_to_tool_data.xspace_to_tool_data(paths, "framework_op_stats", {})
sys.stdout.write(data.decode() if isinstance(data, bytes) else data)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description="Keras's training step by TensorFlow op, from the TensorFlow profiler")
    p.add_argument("--xprof-python", required=True, help="a Python with the xprof package (see the docstring)")
    p.add_argument("--presets", default="seed-64,default", help="seed-64, default or both (default %(default)s)")
    p.add_argument("--precisions", default="fp32", help="fp32, bf16 or both (default %(default)s)")
    p.add_argument("--steps", type=int, default=30, help="batches in the profiled epoch (default %(default)s)")
    p.add_argument("--top", type=int, default=20, help="op types listed (default %(default)s)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default: %(default)s)")
    a = p.parse_args(argv)
    a.presets = [s.strip() for s in a.presets.split(",") if s.strip()]
    a.precisions = [s.strip() for s in a.precisions.split(",") if s.strip()]
    if not a.presets or any(x not in ("seed-64", "default") for x in a.presets):
        fail("--presets: seed-64, default or both")
    if not a.precisions or any(x not in ("fp32", "bf16") for x in a.precisions):
        fail("--precisions: fp32, bf16 or both")
    if a.steps < 1 or a.top < 1:
        fail("--steps and --top must be >= 1")
    probe = subprocess.run([a.xprof_python, "-c", "import xprof.convert.raw_to_tool_data"], capture_output=True)
    if probe.returncode != 0:
        fail(f"--xprof-python {a.xprof_python} cannot import xprof; make one: python3 -m venv /tmp/x && "
             "/tmp/x/bin/pip install xprof==2.24.2, then --xprof-python /tmp/x/bin/python")
    return a


def op_table(stats_json: str, steps: int, top: int) -> dict[str, Any]:
    """framework_op_stats (a Google DataTable) -> self time per step by op type, the threads' idle time apart."""
    table = json.loads(stats_json)
    table = table[0] if isinstance(table, list) else table
    cols = [c["id"] for c in table["cols"]]
    self_us: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for row in table["rows"]:
        v = dict(zip(cols, [c.get("v") if c else None for c in row["c"]], strict=False))
        self_us[v["type"]] += float(v["total_self_time"] or 0)
        count[v["type"]] += int(v["occurrences"] or 0)
    idle = self_us.pop("IDLE", 0.0)
    busy = sum(self_us.values())
    return {"busy_ms_per_step": round(busy / 1000 / steps, 2), "idle_ms_per_step": round(idle / 1000 / steps, 2),
            "ops": [{"type": k, "self_ms_per_step": round(us / 1000 / steps, 3), "share": round(us / busy, 4),
                     "per_step": round(count[k] / steps, 2)} for k, us in self_us.most_common(top)]}


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# Keras's training step by TensorFlow op (TensorFlow profiler, XProf framework_op_stats)", "",
             f"{r['date']}. `{r['command']}`", "",
             f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, TensorFlow {m.get('tensorflow')}, Keras "
             f"{m.get('keras')}; {r['threads']} threads (intra and inter-op). Load average at start "
             f"{m['load_average_start']}, at end {m.get('load_average_end')}.", "",
             f"One profiled `model.fit` epoch of {r['steps']} batches after an untimed one. Self time per step, "
             "summed over TensorFlow's threads (independent ops run at once: the sum can exceed the step's wall "
             "time); the threads' idle time is left out.", ""]
    for run in r["runs"]:
        lines += [f"## {run['preset']} ({run['model']}, batch {run['batch']}), {run['precision']}", "",
                  f"Profiled epoch: {run['ms_per_step']:.1f} ms/step wall; ops busy {run['busy_ms_per_step']:.1f} "
                  f"ms/step (summed over threads).", "", "| op type | ms self/step | share of busy | per step |",
                  "|---|---:|---:|---:|"]
        lines += [f"| `{o['type']}` | {o['self_ms_per_step']:.2f} | {o['share']:.1%} | {o['per_step']:g} |"
                  for o in run["ops"]]
        lines.append("")
    for e in r["errors"]:
        lines.append(f"- {e}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from bench_keras import KerasPeer, PeerError, available, temp_npy

    from aelab.config import resolve
    from aelab.data import load_dataset
    from aelab.errors import AelabError

    if why := available():
        fail(why)
    try:
        bundle = load_dataset("fashion-mnist", download=False, progress=False)
    except AelabError as err:
        fail(str(err))
    info = machine_info()
    threads = usable_cpus()
    r: dict[str, Any] = {"format": FORMAT, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                         "command": shlex.join([sys.executable, *sys.argv]), "machine": info, "threads": threads,
                         "steps": a.steps, "runs": [], "errors": []}
    with tempfile.TemporaryDirectory(prefix="aelab-tfprofile-") as tmp:
        for preset in a.presets:
            cfg = resolve(preset)
            npy = temp_npy(tmp, preset, bundle.train.images[:a.steps * cfg.batch_size])
            for precision in a.precisions:
                logdir = Path(tmp) / f"trace-{preset}-{precision}"
                peer = KerasPeer(threads, tmp, precision)
                try:
                    out = peer.call("profile", x=npy, logdir=str(logdir), batch=cfg.batch_size, latent=cfg.latent,
                                    model=cfg.model)
                except PeerError as err:
                    r["errors"].append(f"{preset} {precision}: {err}")
                    continue
                finally:
                    peer.close()
                done = subprocess.run([a.xprof_python, "-c", CONVERT, str(logdir)], capture_output=True, text=True)
                if done.returncode != 0 or not done.stdout.strip():
                    r["errors"].append(f"{preset} {precision}: XProf could not convert the trace: "
                                       f"{(done.stderr.strip().splitlines() or ['no output'])[-1][:200]}")
                    continue
                r["runs"].append({"preset": preset, "model": cfg.model, "batch": cfg.batch_size,
                                  "precision": precision, "ms_per_step": out["seconds"] * 1000 / a.steps,
                                  **op_table(done.stdout, a.steps, a.top)})
                print(f"[{preset} {precision}] {r['runs'][-1]['ms_per_step']:.1f} ms/step", flush=True)
    info["load_average_end"] = load_average()
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-tfprofile"
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_results(out_dir, stem, r, render)


if __name__ == "__main__":
    sys.exit(main())
