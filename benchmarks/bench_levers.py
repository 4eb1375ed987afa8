"""Issue 32, step 2: each lever on the base model's training step, one at a time, against aelab as it ships.

    .venv/bin/python benchmarks/bench_levers.py                       # every lever, fp32 and bf16, 3 rounds
    .venv/bin/python benchmarks/bench_levers.py --levers malloc --precisions bf16 --rounds 2
    .venv/bin/python benchmarks/bench_levers.py --quick               # 3 steps, 1 round: checks it runs

Every measurement is a child process running aelab's ``Trainer`` on real Fashion-MNIST (preset ``seed-64``:
``conv``, latent 64, BCE, Adam, batch 256) for ``--warmup`` steps and then ``--steps`` timed ones (a post-hook
on the optimizer's step reads the clock and the process's minor page faults). In each round the baseline
(aelab as shipped) and each lever run as separate processes in alternating order, so that a drift of the
machine's speed falls on both. A lever is one of:

- ``malloc``: aelab's start-up allocator setting (``aelab.allocator.keep_freed_memory``) turned *off*
  (``AELAB_MALLOC=system``): the lever measured is the setting itself.
- ``omp-active``: ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP threads spin between parallel regions).
- ``omp-bind``: ``OMP_PROC_BIND=close OMP_PLACES=cores`` (threads pinned to cores).
- ``fused-relu``: the ReLU computed inside the convolution before it (``models.layers.Conv2dReLU`` and
  ``ConvTranspose2dReLU``: one oneDNN primitive with a ReLU post-op) turned *off* in the child (the plain
  convolution and an ``nn.ReLU`` put back, same parameters); the child first checks that both compute the same
  outputs and gradients on one batch.

Writes ``<out>/<date>-<machine>-levers[-quick].{json,md}`` with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import (  # noqa: E402
    Parser,
    fail,
    load_average,
    machine_info,
    machine_slug,
    usable_cpus,
    write_results,
)

PRESET = "seed-64"
FORMAT = "aelab-bench-levers-1"
# lever -> environment of its child, whether the child undoes the ReLU inside the convolutions, and "inverse":
# the lever is what aelab ships, so the child turns it off and the speed-up is off / on
LEVERS: dict[str, dict[str, Any]] = {
    "malloc": {"env": {"AELAB_MALLOC": "system"}, "unfuse": False, "inverse": True},
    "omp-active": {"env": {"OMP_WAIT_POLICY": "ACTIVE"}, "unfuse": False, "inverse": False},
    "omp-bind": {"env": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, "unfuse": False, "inverse": False},
    "fused-relu": {"env": {}, "unfuse": True, "inverse": True},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description="each speed lever on the base model's training step, alternating with the baseline")
    p.add_argument("--levers", default=",".join(LEVERS), help="comma-separated (default: all): " + ", ".join(LEVERS))
    p.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running every contender once")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (default %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="steps before the timed ones (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: usable CPUs)")
    p.add_argument("--quick", action="store_true", help="1 round of 3 steps after 2: the files say 'quick'")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default: %(default)s)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--unfuse", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.steps, a.warmup = 1, 3, 2
    a.levers = [s.strip() for s in a.levers.split(",") if s.strip()]
    a.precisions = [s.strip() for s in a.precisions.split(",") if s.strip()]
    if not a.levers or any(x not in LEVERS for x in a.levers):
        fail(f"--levers {','.join(a.levers)!r}: choose from {', '.join(LEVERS)}")
    if not a.precisions or any(x not in ("fp32", "bf16") for x in a.precisions):
        fail("--precisions: fp32, bf16 or both")
    for flag, v in (("--rounds", a.rounds), ("--steps", a.steps), ("--warmup", a.warmup),
                    ("--threads", a.threads or 1)):
        if v < 1:
            fail(f"{flag} {v}: use 1 or more")
    a.threads = a.threads or usable_cpus()
    return a


# ------------------------------------------------------------------------------------------ the fused-relu lever
def unfuse_conv_relu(model: Any) -> int:
    """Undo what aelab ships: every ``Conv2dReLU`` / ``ConvTranspose2dReLU`` (ReLU inside the convolution's oneDNN
    primitive) becomes the plain convolution again, and the ``Identity`` after it an ``nn.ReLU`` (what the model
    was before); returns the number of layers changed. Same parameters, in place."""
    from torch import nn

    from aelab.models.layers import Conv2dReLU, ConvTranspose2d, ConvTranspose2dReLU

    undone = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], Conv2dReLU | ConvTranspose2dReLU) and isinstance(seq[i + 1], nn.Identity):
                seq[i].__class__ = nn.Conv2d if isinstance(seq[i], Conv2dReLU) else ConvTranspose2d
                seq[i + 1] = nn.ReLU(inplace=True)
                undone += 1
    return undone


def check_unfused(model: Any, images: Any) -> float:
    """Largest difference, relative to the largest value, between the model's outputs and gradients with the ReLU
    inside its convolutions and without (one fp32 batch); 0 means the same arithmetic."""
    import copy

    import torch

    plain = copy.deepcopy(model)
    if not unfuse_conv_relu(plain):
        raise RuntimeError("no fused convolution+ReLU in the model: nothing to compare")
    x = images[:16].float().div(255).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    outs = []
    for m in (model, plain):
        m.zero_grad(set_to_none=True)
        y = m(x)
        y.sum().backward()
        outs.append([y.detach(), *[p.grad for p in m.parameters()]])
    model.zero_grad(set_to_none=True)
    return max(float((u - v).abs().max() / u.abs().max().clamp_min(1e-12)) for u, v in zip(*outs, strict=True))


# ------------------------------------------------------------------------------------------ the child
def child(a: argparse.Namespace) -> None:
    import torch
    from bench_throughput import slice_bundle

    from aelab.config import resolve
    from aelab.data import load_dataset
    from aelab.runs import Run
    from aelab.training import Trainer

    cfg = resolve(PRESET, overrides=dict(epochs=1, patience=0, threads=a.threads, precision=a.precisions[0],
                                         max_minutes=None))
    bundle = load_dataset("fashion-mnist", download=False, progress=False)
    data = slice_bundle(bundle, (a.warmup + a.steps) * cfg.batch_size)
    marks: dict[str, float] = {}
    done = [0]

    def on_step(*_: Any) -> None:
        done[0] += 1
        if done[0] in (a.warmup, a.warmup + a.steps):
            key = "0" if done[0] == a.warmup else "1"
            marks["t" + key] = time.perf_counter()
            marks["f" + key] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(cfg, Run(Path(folder)), bundle=data, progress=False)
        if a.unfuse:
            out["fused_check_max_rel_diff"] = check_unfused(trainer.model, data.train.images)
            out["unfused_layers"] = unfuse_conv_relu(trainer.model)
        trainer.opt.register_step_post_hook(on_step)
        trainer.fit()
    from aelab.allocator import keep_freed_memory

    out.update(ms_per_step=(marks["t1"] - marks["t0"]) * 1000 / a.steps,
               faults_per_step=(marks["f1"] - marks["f0"]) / a.steps, precision=trainer.precision,
               allocator_kept=keep_freed_memory(), torch_threads=torch.get_num_threads(),
               loss=trainer.state.history[-1]["train_loss"])
    Path(a.result).write_text(json.dumps(out))


def run_child(a: argparse.Namespace, precision: str, lever: str | None, folder: Path) -> dict[str, Any]:
    spec = LEVERS[lever] if lever else {"env": {}, "unfuse": False}
    env = {k: v for k, v in os.environ.items() if k not in ("AELAB_MALLOC", "OMP_WAIT_POLICY", "OMP_PROC_BIND",
                                                             "OMP_PLACES")}
    env.update(spec["env"])
    result = folder / f"{precision}-{lever or 'baseline'}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--result", str(result), "--precisions",
           precision, "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)]
    if spec["unfuse"]:
        cmd.append("--unfuse")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()][-1:]
        raise RuntimeError(f"{precision} {lever or 'baseline'} child exited {done.returncode}: {tail}")
    return json.loads(result.read_text())


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    quick = " - QUICK" if r["quick"] else ""
    lines = [f"# Levers on the base model's training step (preset {PRESET}, batch 256){quick}",
             "", f"{r['date']}. `{r['command']}`", "",
             f"Machine: {m.get('cpu_model')}, {m.get('usable_cpus')} usable CPUs, torch {m.get('torch')}; "
             f"{r['threads']} threads. Load average at start {m.get('load_average_start')}, "
             f"at end {m.get('load_average_end')}.", "",
             f"{r['rounds']} rounds; in each, the baseline (aelab as shipped) and every lever run as separate "
             f"processes, order alternating; {r['steps']} timed steps after {r['warmup']}. ms/step: median of the "
             "rounds (each round's figure is one process's mean step). Speed-up: baseline ms / lever ms (for "
             "`malloc`, the lever is the shipped setting, so: lever-off ms / baseline ms).", "",
             "| precision | lever | ms/step baseline | ms/step lever | speed-up (median of paired rounds) | "
             "paired range | page faults/step (baseline, lever) |", "|---|---|---:|---:|---:|---|---|"]
    for row in r["table"]:
        lines.append(f"| {row['precision']} | {row['lever']} | {row['baseline_ms']:.1f} | {row['lever_ms']:.1f} | "
                     f"**{row['speedup']:.3f}x** | {row['paired_min']:.3f}-{row['paired_max']:.3f} | "
                     f"{row['faults_baseline']:.0f}, {row['faults_lever']:.0f} |")
    for note in r["notes"] + r["errors"]:
        lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        child(a)
        return 0
    from aelab.data import load_dataset
    from aelab.errors import AelabError

    try:  # the children read the same files: a missing data set is one line here, not an error per child
        load_dataset("fashion-mnist", download=False, progress=False)
    except AelabError as err:
        fail(str(err))
    info = machine_info()
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-levers" + ("-quick" if a.quick else "")
    out_dir = Path(a.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"cannot create {err.filename} ({err.strerror}); choose a writable folder")
    r: dict[str, Any] = {"format": FORMAT, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": a.quick,
                         "command": shlex.join([sys.executable, *sys.argv]), "machine": info, "threads": a.threads,
                         "rounds": a.rounds, "steps": a.steps, "warmup": a.warmup, "runs": [], "table": [],
                         "notes": [], "errors": []}
    with tempfile.TemporaryDirectory(prefix="aelab-levers-") as tmp:
        for precision in a.precisions:
            for rnd in range(a.rounds):
                order: list[str | None] = [None, *a.levers]
                for lever in order if rnd % 2 == 0 else order[::-1]:
                    try:
                        got = run_child(a, precision, lever, Path(tmp))
                    except RuntimeError as err:
                        r["errors"].append(str(err))
                        print(f"  failed: {err}", flush=True)
                        continue
                    r["runs"].append({"precision": precision, "round": rnd, "lever": lever or "baseline", **got})
                    print(f"[{precision} round {rnd}] {lever or 'baseline'}: {got['ms_per_step']:.1f} ms/step, "
                          f"{got['faults_per_step']:.0f} faults/step", flush=True)
    for precision in a.precisions:
        base = {x["round"]: x for x in r["runs"] if x["precision"] == precision and x["lever"] == "baseline"}
        for lever in a.levers:
            mine = {x["round"]: x for x in r["runs"] if x["precision"] == precision and x["lever"] == lever}
            rounds = sorted(set(base) & set(mine))
            if not rounds:
                continue
            inverse = LEVERS[lever]["inverse"]
            paired = [(mine[k]["ms_per_step"] / base[k]["ms_per_step"]) if inverse else
                      (base[k]["ms_per_step"] / mine[k]["ms_per_step"]) for k in rounds]
            r["table"].append({
                "precision": precision, "lever": lever,
                "baseline_ms": statistics.median(base[k]["ms_per_step"] for k in rounds),
                "lever_ms": statistics.median(mine[k]["ms_per_step"] for k in rounds),
                "speedup": statistics.median(paired), "paired_min": min(paired), "paired_max": max(paired),
                "faults_baseline": statistics.median(base[k]["faults_per_step"] for k in rounds),
                "faults_lever": statistics.median(mine[k]["faults_per_step"] for k in rounds)})
            checks = [mine[k].get("fused_check_max_rel_diff") for k in rounds if "fused_check_max_rel_diff" in mine[k]]
            if checks:
                r["notes"].append(f"fused-relu {precision}: ReLU inside the convolutions vs after them, largest "
                                  f"relative difference of outputs and gradients on one fp32 batch: {max(checks):.2e}")
    info["load_average_end"] = load_average()
    return write_results(out_dir, stem, r, render)


if __name__ == "__main__":
    sys.exit(main())
