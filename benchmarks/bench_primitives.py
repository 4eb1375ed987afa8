"""Where the training step's time goes, primitive by primitive (issue 32, step 1): the base model (preset
``seed-64``: ``conv``, latent 64, BCE, Adam, batch 256; or ``--preset default``: ``conv-modified`` with its
loss, optimizer and batch) in aelab and in Keras 3 / TensorFlow, at fp32 and bf16, under oneDNN's verbose log.

    .venv/bin/python benchmarks/bench_primitives.py                      # 20 counted steps after 5 of warm-up
    .venv/bin/python benchmarks/bench_primitives.py --quick              # 3 steps after 2: checks it runs
    .venv/bin/python benchmarks/bench_primitives.py --preset default     # the default model (conv-modified)
    .venv/bin/python benchmarks/bench_primitives.py --precisions fp32 --frameworks aelab --steps 10 --logs /tmp/l

For each framework and precision, two child processes train on the same real Fashion-MNIST images:

- **verbose** (``ONEDNN_VERBOSE=2``): ``--warmup`` steps, then a marker line, ``--steps`` counted steps, a
  marker line. Only the primitive lines between the markers are counted (``onednn_log.read``): executions per
  kind, implementation and propagation, per layer (formats, post-ops), the reorders (between which formats),
  primitive creations (cache hits and misses). aelab: its ``Trainer`` (the markers are written by a post-hook
  on its optimizer's step, to the stream oneDNN prints to); Keras: ``bench_keras``'s worker, a warm-up
  ``model.fit`` and then one ``model.fit`` epoch of ``--steps`` batches between the markers.
- **clean** (no verbose log): the same steps timed, so that the wall time per step is not the verbose log's;
  aelab then profiles ``--steps`` more steps with ``torch.profiler`` (top operators by self CPU time).

TensorFlow runs independent operations of a step at once (inter-op threads), so its primitives' times can sum to
more than the step's wall time. Writes ``<out>/<date>-<machine>-primitives[-quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import onednn_log  # noqa: E402 - after the path is set, like every benchmark module
from bench_common import (  # noqa: E402
    Parser,
    fail,
    load_average,
    machine_info,
    machine_slug,
    usable_cpus,
    write_results,
)

PRESETS = ("seed-64", "default")  # the base model (the table) and the default one
FRAMEWORKS = ("aelab", "keras")
FORMAT = "aelab-bench-primitives-1"


def names(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    got = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in got if t not in allowed]
    if bad or not got:
        fail(f"{flag} {text!r}: use a comma-separated list of {', '.join(allowed)}")
    return list(dict.fromkeys(got))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description="oneDNN primitives per training step of the base model, aelab and Keras side by side")
    p.add_argument("--preset", default="seed-64", choices=PRESETS,
                   help="seed-64: the base conv model; default: the default model, conv-modified (default %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="counted steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="steps before the counted ones (default %(default)s)")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both (default %(default)s)")
    p.add_argument("--frameworks", default="aelab,keras", help="aelab, keras or both (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="threads of each framework (default: usable CPUs)")
    p.add_argument("--top", type=int, default=15, help="torch.profiler operators listed (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="3 steps after 2 of warm-up; the files say 'quick'")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default: %(default)s)")
    p.add_argument("--logs", default=None, help="also keep the raw verbose logs in this folder")
    p.add_argument("--child", choices=("verbose", "clean"), help=argparse.SUPPRESS)  # the aelab child process
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.warmup = 3, 2
    for flag, v, low in (("--steps", a.steps, 1), ("--warmup", a.warmup, 1), ("--top", a.top, 1),
                         ("--threads", a.threads or 1, 1)):
        if v < low:
            fail(f"{flag} {v}: use {low} or more")
    a.precisions = names(a.precisions, ("fp32", "bf16"), "--precisions")
    a.frameworks = names(a.frameworks, FRAMEWORKS, "--frameworks")
    a.threads = a.threads or usable_cpus()
    from aelab.config import resolve

    cfg = resolve(a.preset)
    a.batch, a.latent, a.model = cfg.batch_size, cfg.latent, cfg.model
    return a


def load_bundle() -> Any:
    from aelab.data import load_dataset
    from aelab.errors import AelabError

    try:
        return load_dataset("fashion-mnist", download=False, progress=False)
    except AelabError as err:
        fail(str(err))


# ------------------------------------------------------------------------------------------ the aelab child
def aelab_child(a: argparse.Namespace) -> None:
    """The Trainer over (warmup + steps [+ steps profiled]) batches; markers around the counted steps on fd 1
    (oneDNN prints there and flushes each line); the figures into ``--result``."""
    import torch
    from bench_throughput import slice_bundle
    from torch.profiler import ProfilerActivity, profile

    from aelab.config import resolve
    from aelab.runs import Run
    from aelab.training import Trainer

    precision = a.precisions[0]
    profiled = a.steps if a.child == "clean" else 0
    cfg = resolve(a.preset, overrides=dict(epochs=1, patience=0, threads=a.threads, precision=precision,
                                         max_minutes=None))
    data = slice_bundle(load_bundle(), (a.warmup + a.steps + profiled) * cfg.batch_size)
    prof = profile(activities=[ProfilerActivity.CPU])
    clock: dict[str, float] = {}
    done = [0]

    def on_step(*_: Any) -> None:
        done[0] += 1
        if done[0] == a.warmup:
            os.write(1, f"{onednn_log.BEGIN}\n".encode())
            clock["t0"] = time.perf_counter()
        elif done[0] == a.warmup + a.steps:
            clock["t1"] = time.perf_counter()
            os.write(1, f"{onednn_log.END}\n".encode())
            if profiled:
                prof.start()
        elif profiled and done[0] == a.warmup + a.steps + profiled:
            prof.stop()
            clock["t2"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(cfg, Run(Path(folder)), bundle=data, progress=False)
        trainer.opt.register_step_post_hook(on_step)
        trainer.fit()
    out: dict[str, Any] = {"wall_ms_per_step": round((clock["t1"] - clock["t0"]) * 1000 / a.steps, 2),
                           "precision": trainer.precision, "torch_threads": torch.get_num_threads(),
                           "loss": trainer.state.history[-1]["train_loss"]}
    if profiled:
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
        out["profiled_wall_ms_per_step"] = round((clock["t2"] - clock["t1"]) * 1000 / profiled, 2)
        out["profile_self_cpu_ms_per_step"] = round(total / 1000 / profiled, 2)
        out["top_ops"] = [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / profiled, 3),
                           "share": round(e.self_cpu_time_total / total, 4), "calls_per_step": e.count / profiled}
                          for e in events[:a.top]]
    Path(a.result).write_text(json.dumps(out))


def run_aelab(a: argparse.Namespace, precision: str, mode: str, logs: Path) -> tuple[dict[str, Any], Path]:
    log, result = logs / f"aelab-{precision}-{mode}.log", logs / f"aelab-{precision}-{mode}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEDNN_VERBOSE")}
    if mode == "verbose":
        env["ONEDNN_VERBOSE"] = "2"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--result", str(result),
           "--preset", a.preset, "--precisions", precision, "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--threads", str(a.threads), "--top", str(a.top)]
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise RuntimeError(f"aelab {precision} {mode} child exited {rc}: {tail[0][:300] if tail else '(no output)'}")
    return json.loads(result.read_text()), log


# ------------------------------------------------------------------------------------------ the Keras side
@contextlib.contextmanager
def verbose_env(on: bool) -> Iterator[None]:
    """ONEDNN_VERBOSE=2 (or none) in this process's environment while a worker is started, then as it was."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("ONEDNN_VERBOSE")}
    for k in saved:
        del os.environ[k]
    if on:
        os.environ["ONEDNN_VERBOSE"] = "2"
    try:
        yield
    finally:
        os.environ.pop("ONEDNN_VERBOSE", None)
        os.environ.update(saved)


def run_keras(a: argparse.Namespace, precision: str, mode: str, logs: Path, npys: dict[str, str]
              ) -> tuple[dict[str, Any], Path]:
    """bench_keras's worker: a warm-up fit of ``warmup`` batches, then one fit of ``steps`` batches between the
    markers (written by this process into the worker's log, which the worker's stdout and stderr share)."""
    from bench_keras import KerasPeer

    folder = logs / f"keras-{precision}-{mode}"
    folder.mkdir(exist_ok=True)
    with verbose_env(mode == "verbose"):
        peer = KerasPeer(a.threads, folder, precision)
    try:
        hello = peer.call("hello", latent=a.latent, model=a.model)
        peer.call("throughput", x=npys["warmup"], batch=a.batch, latent=a.latent, model=a.model)
        peer.log.write(f"{onednn_log.BEGIN}\n")
        peer.log.flush()
        out = peer.call("throughput", x=npys["window"], batch=a.batch, latent=a.latent, model=a.model)
        peer.log.write(f"{onednn_log.END}\n")
        peer.log.flush()
    finally:
        peer.close()
    return {"wall_ms_per_step": round(out["seconds"] * 1000 / a.steps, 2), "precision": precision,
            "policy": hello.get("policy"), "intra_op_threads": hello.get("intra_op_threads"),
            "inter_op_threads": hello.get("inter_op_threads"), "loss": out["loss"]}, peer.log_path


# ------------------------------------------------------------------------------------------ the parent
def measure(a: argparse.Namespace, framework: str, precision: str, logs: Path, npys: dict[str, str]
            ) -> dict[str, Any]:
    run = run_aelab if framework == "aelab" else run_keras
    args = (npys,) if framework == "keras" else ()
    verbose, log = run(a, precision, "verbose", logs, *args)
    onednn = onednn_log.read(log.read_text(errors="replace").splitlines(), a.steps)
    clean, _ = run(a, precision, "clean", logs, *args)
    wall = verbose["wall_ms_per_step"]
    return {"framework": framework, "precision": precision, "verbose_run": verbose, "clean_run": clean,
            "wall_ms_per_step": clean["wall_ms_per_step"], "wall_ms_per_step_verbose": wall,
            "onednn_share_of_verbose_wall": round(onednn["exec_ms_per_step"] / wall, 4) if wall else None,
            **onednn}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        aelab_child(a)
        return 0
    from bench_keras import available, temp_npy
    from bench_primitives_report import render


    info = machine_info()
    preset = "" if a.preset == "seed-64" else f"-{a.preset}"
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-primitives{preset}" + ("-quick" if a.quick else "")
    out_dir = Path(a.out)
    bundle = load_bundle()  # first: a missing data set leaves no folder behind
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if a.logs:
            Path(a.logs).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"cannot create {err.filename} ({err.strerror}); choose a writable folder")
    notes: list[str] = []
    frameworks = list(a.frameworks)
    if "keras" in frameworks and (why := available()):
        notes.append(why)
        frameworks.remove("keras")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "format": FORMAT, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": a.quick,
        "command": shlex.join([sys.executable, *sys.argv]), "machine": info, "preset": a.preset, "batch": a.batch,
        "latent": a.latent, "steps": a.steps, "warmup": a.warmup, "threads": a.threads, "runs": [], "errors": [],
        "notes": notes}
    with tempfile.TemporaryDirectory(prefix="aelab-primitives-") as tmp:
        logs = Path(a.logs or tmp)
        images = bundle.train.images
        npys = {"warmup": temp_npy(tmp, "warmup", images[:a.warmup * a.batch]),
                "window": temp_npy(tmp, "window", images[a.warmup * a.batch:(a.warmup + a.steps) * a.batch])}
        for i, precision in enumerate(a.precisions):
            for framework in frameworks if i % 2 == 0 else frameworks[::-1]:  # alternate who goes first
                print(f"[{framework} {precision}] verbose and clean runs", flush=True)
                try:
                    results["runs"].append(measure(a, framework, precision, logs, npys))
                except Exception as err:  # noqa: BLE001 - record it, keep the other runs
                    results["errors"].append(f"{framework} {precision}: {type(err).__name__}: {err}")
                    print(f"  failed: {results['errors'][-1]}", flush=True)
    info["load_average_end"] = load_average()
    results["seconds"] = round(time.perf_counter() - started, 1)
    return write_results(out_dir, stem, results, render)


if __name__ == "__main__":
    sys.exit(main())
