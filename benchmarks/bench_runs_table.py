"""``aelab runs`` on a thousand run folders: goal, the table in under 1 s (issue 31).

One real small run is trained (or given with ``--run``), then copied ``--runs`` times into a temporary folder as
its records only (aelab's mark, config.yaml, data.json, history.csv, metrics.json; no checkpoint): the finished
runs the table reads from metrics.json. Every ``--unevaluated``-th copy has no metrics.json and a hard link to the
run's last checkpoint instead (no disk space; the table reads its header only), so the slower path (config.yaml
parsed and checked, the checkpoint's header read) is timed too. Timed, alternating, ``--rounds`` times:

- ``table``: ``runs_table`` + ``select`` + ``render`` in this process (what grows with the number of runs);
- ``command``: the whole ``aelab runs FOLDER --format csv`` process, start-up included;
- ``startup``: the same process on an empty folder (its imports: what the command costs with no runs).

Run: ``.venv/bin/python benchmarks/bench_runs_table.py`` (about a minute). Results:
benchmarks/results/<date>-<machine>-runs-table.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import load_average, machine_info, machine_slug

from aelab.config import resolve
from aelab.experiments.jobs import train_job
from aelab.experiments.runs_table import render, runs_table, select, summary
from aelab.files import atomic_write_text, write_json
from aelab.runs import Run

HERE = Path(__file__).resolve().parent
GOAL_SECONDS = 1.0


def small_run(where: Path) -> Run:
    """A real run: conv-modified, latent 16, width 0.5, 1 epoch on 2,000 images, evaluated (about 20 s)."""
    cfg = resolve(overrides=dict(train_limit=2000, epochs=1, latent=16, width=0.5, threads=1, report=False))
    run, _ = train_job(cfg, out=where / "source", progress=False)
    return run


def copies(src: Run, root: Path, n: int, unevaluated: int) -> None:
    """``n`` copies of the records of ``src`` under ``root/group-<k>/run-<i>`` (nested, as studies are)."""
    for i in range(n):
        dst = Run(root / f"group-{i // 100}" / f"run-{i:04d}")
        dst.path.mkdir(parents=True)
        dst.start()  # aelab's mark, written by its owner
        for name in ("config_file", "data_record", "history"):
            shutil.copyfile(getattr(src, name), getattr(dst, name))
        if unevaluated and i % unevaluated == 0:
            os.link(src.last, dst.last)
        else:
            shutil.copyfile(src.metrics, dst.metrics)


def timed_table(root: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, the states) of the table in this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = runs_table(root)
    text = render(select(rows, [], "-ssim"), "csv")
    return time.perf_counter() - t0, time.process_time() - c0, summary(rows) if text else ""


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def timed_command(folder: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a whole 'aelab runs FOLDER' process."""
    exe = Path(sys.executable).with_name("aelab")
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([str(exe), "runs", str(folder), "--format", "csv"], capture_output=True, text=True)
    took = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"aelab runs failed: {proc.stderr.strip()}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="an evaluated run folder to copy (default: train one)")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--unevaluated", type=int, default=10, help="every N-th copy is not evaluated (0: none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    info = machine_info()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="aelab-bench-runs-") as tmp:
        src = Run.open(args.run) if args.run else small_run(Path(tmp))
        root, empty = Path(tmp) / "runs", Path(tmp) / "empty"
        empty.mkdir()
        copies(src, root, args.runs, args.unevaluated)
        timed_table(root)  # warm the file-system cache: every round reads the same files
        times: dict[str, list[float]] = {"table": [], "command": [], "startup": []}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        states = ""
        for r in range(args.rounds):
            order = ["table", "command", "startup"] if r % 2 == 0 else ["startup", "command", "table"]
            for what in order:
                if what == "table":
                    took, used, states = timed_table(root)
                else:
                    took, used = timed_command(root if what == "command" else empty)
                times[what].append(took)
                cpu[what].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    result: dict[str, Any] = {
        "format": "aelab-bench-runs-table-1", "machine": info, "load_average": [load_start, load_average()],
        "runs": args.runs, "unevaluated_every": args.unevaluated, "rounds": args.rounds, "states": states,
        "seconds": times, "median_seconds": med, "cpu_seconds": cpu, "median_cpu_seconds": med_cpu,
        "goal_seconds": GOAL_SECONDS,
        "per_run_ms": 1000 * med["table"] / args.runs,
        "goal_met_table": med["table"] < GOAL_SECONDS, "goal_met_command": med["command"] < GOAL_SECONDS,
    }
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-runs-table"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{stem}.json", result)
    md = [f"# aelab runs on {args.runs:,} run folders ({states})", "",
          f"{info['cpu_model']}, {info['usable_cpus']} usable CPUs; load average {load_start} -> {load_average()}; "
          f"median of {args.rounds} alternating rounds.", "",
          "| what | median wall s | median CPU s | all rounds, wall (s) |", "|---|---:|---:|---|"]
    md += [f"| {k} | {med[k]:.3f} | {med_cpu[k]:.3f} | {', '.join(f'{t:.3f}' for t in times[k])} |" for k in times]
    md += ["", f"The table (in-process): {med['table']:.3f} s, {result['per_run_ms']:.2f} ms a run: goal "
               f"< {GOAL_SECONDS:g} s {'met' if result['goal_met_table'] else 'MISSED'} (CPU {med_cpu['table']:.3f} s: "
               f"on a machine shared with other processes the wall time is the one that grows). The whole command: "
               f"{med['command']:.3f} s, of which {med['startup']:.3f} s is the start-up with no run (its imports: "
               f"Python, click, yaml; no torch)."]
    atomic_write_text(args.out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
