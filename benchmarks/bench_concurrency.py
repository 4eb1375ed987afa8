"""Two trainings on one machine: the sum of their throughputs against one training alone.

Seen before the fix: two 2-thread trainings on 2 cores went from ~0.1 s to ~6 s per batch, tens of times
slower each (OpenMP threads spin-wait for each other when more threads than cores run). A training without
``--threads`` now uses the cores other processes leave free (``aelab.device.CoreShare``, checked every few
seconds). Goal: two concurrent trainings together reach >= 80% of one training alone.

Each training is a real ``aelab train`` process on a slice of Fashion-MNIST (``--no-eval``), its rate the
mean ``images_per_s`` of its epochs after the first (history.csv). Scenarios, in alternating order over
``--rounds``:

- ``alone``: one training, threads chosen by aelab;
- ``two-auto``: two trainings started together, threads chosen by aelab (the default);
- ``two-fixed``: two trainings started together with ``--threads`` = all cores each (the old default);
- ``two-fixed-passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning).

Run: ``.venv/bin/python benchmarks/bench_concurrency.py`` (about 5 minutes on 2 cores; ``--smoke`` in seconds).
Results: benchmarks/results/<date>-<machine>-concurrency.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import load_average, machine_info, machine_slug

from aelab.device import cores
from aelab.files import atomic_write_text, write_json

HERE = Path(__file__).resolve().parent
AELAB = str(Path(sys.executable).with_name("aelab"))
SCENARIOS = ("alone", "two-auto", "two-fixed", "two-fixed-passive")


def _rate(run: Path) -> float:
    with (run / "history.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    speeds = [float(r["images_per_s"]) for r in rows[1:]] or [float(rows[-1]["images_per_s"])]
    return statistics.mean(speeds)


def _start(out: Path, args: argparse.Namespace, threads: int | None, env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [AELAB, "train", "--preset", args.preset, "--train-limit", str(args.images), "--epochs",
           str(args.epochs), "--patience", "0", "--no-eval", "--no-report", "-q", "--out", str(out)]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def scenario(name: str, args: argparse.Namespace, tmp: Path) -> list[float]:
    """The rates (images/s) of the trainings of one scenario, run to the end."""
    env = dict(os.environ)
    n, threads = (1, None) if name == "alone" else (2, None if name == "two-auto" else cores())
    if name == "two-fixed-passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    runs = [Path(tempfile.mkdtemp(dir=tmp)) / "run" for _ in range(n)]
    procs = [_start(run, args, threads, env) for run in runs]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode:
            raise RuntimeError(f"{name}: aelab train exited {p.returncode}: {err.strip()[-300:]}")
    return [_rate(run) for run in runs]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default", help="the recipe each training runs [default: default]")
    p.add_argument("--images", type=int, default=6000, help="training images per run")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not counted)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every scenario, order alternating")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated scenarios to run ('alone' always runs); e.g. alone,two-auto: ~5 minutes, "
                        "without the ~30 minutes the collapsing two-fixed scenarios take on 2 cores")
    p.add_argument("--smoke", action="store_true", help="tiny runs: checks the script works")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    if args.smoke:
        args.images, args.epochs, args.rounds = 600, 2, 1
    info = machine_info()
    started = time.perf_counter()
    chosen = tuple(s for s in SCENARIOS if s == "alone" or s in args.scenarios.split(","))
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    rates: dict[str, list[list[float]]] = {s: [] for s in chosen}
    with tempfile.TemporaryDirectory(prefix="aelab-concurrency-") as tmp:
        for r in range(args.rounds):
            order = chosen if r % 2 == 0 else chosen[::-1]
            for name in order:
                rates[name].append(scenario(name, args, Path(tmp)))
                print(f"round {r + 1} {name}: {[round(v) for v in rates[name][-1]]} images/s", flush=True)
    alone = statistics.median(v[0] for v in rates["alone"])
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "smoke": args.smoke, "machine": info,
        "command": " ".join([sys.executable, *sys.argv]), "preset": args.preset, "images": args.images,
        "epochs": args.epochs, "rounds": args.rounds, "rates": rates, "alone_images_per_s": round(alone, 1),
        "sum_share_of_alone": {name: round(statistics.median(sum(v) for v in rates[name]) / alone, 3)
                               for name in chosen if name != "alone"},
        "goal": "two concurrent trainings together >= 0.8 of one alone",
    }
    info["load_average_end"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-concurrency{'-smoke' if args.smoke else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{stem}.json", result)
    atomic_write_text(args.out / f"{stem}.md", render(result))
    print(json.dumps(result["sum_share_of_alone"]))
    return 0


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# Two trainings on one machine, {r['date']}{' (smoke run: figures meaningless)' if r['smoke'] else ''}",
             "", f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}; load average at "
             f"start {m.get('load_average_start')}, at end {m.get('load_average_end')}.", "",
             f"Each training: `aelab train --preset {r['preset']} --train-limit {r['images']} --epochs {r['epochs']} "
             f"--no-eval`; its rate is the mean images/s of its epochs after the first. {r['rounds']} rounds, "
             f"scenarios alternating. Command: `{r['command']}`.", "",
             "| scenario | images/s of each training, per round | sum / one alone |", "|---|---|---:|"]
    for name, rounds in r["rates"].items():
        share = r["sum_share_of_alone"].get(name)
        cells = "; ".join(" + ".join(f"{v:,.0f}" for v in rnd) for rnd in rounds)
        lines.append(f"| {name} | {cells} | {'–' if share is None else f'{share:.2f}'} |")
    lines += ["", f"Goal: {r['goal']}. `alone` median: {r['alone_images_per_s']:,.0f} images/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
