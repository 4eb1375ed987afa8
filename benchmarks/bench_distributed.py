"""Training on several processes on one machine: 2 processes x 1 thread (DistributedDataParallel over gloo)
against 1 process x 2 threads, the same run otherwise.

Each contender is a real ``aelab train`` (``--nproc 2 --threads 1`` against ``--threads 2``) on the same slice
of Fashion-MNIST with the same recipe (``--preset``, ``--no-eval``); its rate is the mean ``images_per_s`` of
its epochs after the first (history.csv: images of the global batch per second of rank 0's training loop, the
validation pass excluded), and its wall time the whole command (process start, data, rendezvous, training).
The scenarios alternate over ``--rounds``. Beside them: the time of one gloo all-reduce of the model's
gradients between two processes on this machine (what DDP adds to every step).

Run: ``.venv/bin/python benchmarks/bench_distributed.py`` (about 6 minutes on 2 cores; ``--smoke`` in seconds).
Results: benchmarks/results/<date>-<machine>-distributed.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from bench_common import load_average, machine_info, machine_slug

from aelab.config import resolve
from aelab.files import atomic_write_text, write_json
from aelab.models import build_model, count_parameters

HERE = Path(__file__).resolve().parent
AELAB = str(Path(sys.executable).with_name("aelab"))
SCENARIOS = {"1 process x 2 threads": ["--threads", "2"], "2 processes x 1 thread": ["--threads", "1", "--nproc", "2"]}


def _rate(run: Path) -> float:
    with (run / "history.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    speeds = [float(r["images_per_s"]) for r in rows[1:]] or [float(rows[-1]["images_per_s"])]
    return statistics.mean(speeds)


def scenario(name: str, args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    """(images/s, wall seconds) of one training of scenario ``name``."""
    out = Path(tempfile.mkdtemp(dir=tmp)) / "run"
    cmd = [AELAB, "train", "--preset", args.preset, "--train-limit", str(args.images), "--epochs", str(args.epochs),
           "--patience", "0", "--no-eval", "--no-report", "-q", "--out", str(out), *SCENARIOS[name]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{name}: aelab train exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return _rate(out), wall


def _allreduce(rank: int, port: int, numel: int, repeats: int, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    grads = torch.randn(numel)
    for _ in range(3):
        dist.all_reduce(grads)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(grads)
    if rank == 0:
        out.write_text(str((time.perf_counter() - t0) / repeats))
    dist.destroy_process_group()


def allreduce_ms(numel: int, repeats: int = 50) -> float:
    """Milliseconds of one gloo all-reduce of ``numel`` float32 between two local processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t"
        torch.multiprocessing.spawn(_allreduce, args=(port, numel, repeats, out), nprocs=2)
        return float(out.read_text()) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default", help="the recipe each training runs [default: default]")
    p.add_argument("--images", type=int, default=8000, help="training images per run")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not counted)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every scenario, order alternating")
    p.add_argument("--smoke", action="store_true", help="tiny runs: checks the script works")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    if args.smoke:
        args.images, args.epochs, args.rounds = 600, 2, 1
    os.environ.setdefault("AELAB_DATA_DIR", str(HERE.parent.parent / "shared" / "data"))
    info = machine_info()
    started = time.perf_counter()
    cfg = resolve(args.preset)
    params = count_parameters(build_model(cfg.model, **cfg.model_kwargs()))
    rates: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    walls: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="aelab-distributed-") as tmp:
        for r in range(args.rounds):
            for name in (list(SCENARIOS) if r % 2 == 0 else list(SCENARIOS)[::-1]):
                rate, wall = scenario(name, args, Path(tmp))
                rates[name].append(rate)
                walls[name].append(wall)
                print(f"round {r + 1} {name}: {rate:,.0f} images/s, {wall:.1f} s", flush=True)
    reduce_ms = allreduce_ms(params)
    medians = {name: statistics.median(v) for name, v in rates.items()}
    one, two = medians["1 process x 2 threads"], medians["2 processes x 1 thread"]
    steps_per_s = two / cfg.batch_size
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "smoke": args.smoke, "machine": info,
        "command": " ".join([sys.executable, *sys.argv]), "preset": args.preset, "images": args.images,
        "epochs": args.epochs, "rounds": args.rounds, "batch_size": cfg.batch_size, "parameters": params,
        "images_per_s": rates, "wall_seconds": walls,
        "median_images_per_s": {k: round(v, 1) for k, v in medians.items()},
        "two_processes_over_one": round(two / one, 3),
        "median_wall_seconds": {k: round(statistics.median(v), 1) for k, v in walls.items()},
        "allreduce_ms": round(reduce_ms, 2),
        "allreduce_share_of_step": round(reduce_ms / 1000 * steps_per_s, 3),
    }
    info["load_average_end"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-distributed{'-smoke' if args.smoke else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{stem}.json", result)
    atomic_write_text(args.out / f"{stem}.md", render(result))
    print(json.dumps({k: result[k] for k in ("median_images_per_s", "two_processes_over_one", "allreduce_ms")}))
    return 0


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# Two processes x 1 thread against one process x 2 threads, {r['date']}"
             f"{' (smoke run: figures meaningless)' if r['smoke'] else ''}", "",
             f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}; load average at "
             f"start {m.get('load_average_start')}, at end {m.get('load_average_end')}.", "",
             f"Each training: `aelab train --preset {r['preset']} --train-limit {r['images']} --epochs {r['epochs']} "
             f"--no-eval` plus the scenario's options; its rate is the mean images/s of its epochs after the first "
             f"(global batch {r['batch_size']}), its wall time the whole command. {r['rounds']} rounds, scenarios "
             f"alternating. Command: `{r['command']}`.", "",
             "| scenario | images/s per round | median | wall s per round |", "|---|---|---:|---|"]
    for name, rounds in r["images_per_s"].items():
        cells = ", ".join(f"{v:,.0f}" for v in rounds)
        walls = ", ".join(f"{v:.1f}" for v in r["wall_seconds"][name])
        lines.append(f"| {name} | {cells} | {r['median_images_per_s'][name]:,.0f} | {walls} |")
    lines += ["", f"2 processes / 1 process: **{r['two_processes_over_one']:.2f}x**. One gloo all-reduce of the "
              f"model's {r['parameters']:,} gradients between two local processes: {r['allreduce_ms']:.2f} ms "
              f"(x the 2-process run's steps per second = {r['allreduce_share_of_step']:.0%} of its time)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
