"""Training throughput of the VAEs against the plain model of the same backbone, side by side in one process.

    .venv/bin/python benchmarks/bench_vae.py                       # 5 counted rounds of 5,120 images, all threads
    .venv/bin/python benchmarks/bench_vae.py --rounds 3 --threads 2
    .venv/bin/python benchmarks/bench_vae.py --smoke --out /tmp/b  # tiny slices: checks that it runs

Contenders, per backbone, each a long-lived aelab ``Trainer`` (its default precision: bf16 autocast where the CPU
has native bf16) on the same slice of real Fashion-MNIST training images, latent 64, batch 128:

- ``vae`` / ``vae-dense``: the VAE (Bernoulli likelihood, beta 1);
- ``plain-bce``: ``conv-modified`` / ``dense`` with ``--loss bce`` (the same likelihood term: like with like);
- ``plain-default``: the plain model with the default loss (MSE + 0.1 (1 - SSIM)).

Each round runs one epoch of every contender, their order alternating from round to round; round 0 is a warm-up
(oneDNN primitive creation) and is not counted. The figure of each epoch is the Trainer's own ``images_per_s``
(training loop only). The ratio is the median VAE rate over the median ``plain-bce`` rate, and the paired
per-round ratios are listed beside it. Results: ``results/<date>-<machine>-vae.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import load_average, machine_info, machine_slug, ratio, summary
from bench_throughput import slice_bundle

from aelab.config import resolve
from aelab.data import load_dataset
from aelab.runs import Run
from aelab.training import Trainer

BACKBONES = {"conv-modified": "vae", "dense": "vae-dense"}


def contenders(backbone: str) -> dict[str, dict[str, Any]]:
    return {BACKBONES[backbone]: dict(model=BACKBONES[backbone]),
            "plain-bce": dict(model=backbone, loss="bce"),
            "plain-default": dict(model=backbone)}


def run_backbone(backbone: str, data: Any, rounds: int, warmup: int, threads: int, tmp: str) -> dict[str, Any]:
    trainers: dict[str, Trainer] = {}
    for name, opts in contenders(backbone).items():
        cfg = resolve(overrides=dict(opts, latent=64, batch_size=128, epochs=rounds + warmup, patience=0,
                                     threads=threads, report=False))
        folder = Path(tempfile.mkdtemp(dir=tmp))
        trainers[name] = Trainer(cfg, Run(folder), bundle=data, progress=False)
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    order = list(trainers)
    for r in range(rounds + warmup):
        for name in (order if r % 2 == 0 else order[::-1]):
            t = trainers[name]
            t._epoch()  # one epoch of the loop fit() runs
            if r >= warmup:
                rates[name].append(t.state.history[-1]["images_per_s"])
    vae = BACKBONES[backbone]
    paired = [round(a / b, 3) for a, b in zip(rates[vae], rates["plain-bce"], strict=True)]
    med = {k: summary(v)["median"] for k, v in rates.items()}
    return {"backbone": backbone, "precision": trainers[vae].precision,
            "contenders": {k: {"model": trainers[k].cfg.model, "loss": trainers[k].cfg.objective(), **summary(v)}
                           for k, v in rates.items()},
            "ratio_vae_vs_plain_bce": ratio(med[vae], med["plain-bce"], 3),
            "ratio_vae_vs_plain_default": ratio(med[vae], med["plain-default"], 3),
            "paired_ratios_vs_plain_bce": paired,
            "paired_median": round(statistics.median(paired), 3) if paired else None}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"# VAE training throughput vs the plain model ({res['date']})", "",
             f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}, {res['threads']} "
             f"threads; load average {m['load_average_start']} at the start, {res['load_average_end']} at the end.",
             f"{res['images']:,} real Fashion-MNIST training images per round, {res['rounds']} counted rounds "
             f"(+{res['warmup']} warm-up), latent 64, batch 128, order alternating. Command: `{res['command']}`.", "",
             "| backbone | contender | loss | images/s (median) | min | max |", "|---|---|---|---|---|---|"]
    for b in res["backbones"]:
        for name, c in b["contenders"].items():
            lines.append(f"| {b['backbone']} ({b['precision']}) | {name} | {c['loss']} | {c['median']} | {c['min']} | "
                         f"{c['max']} |")
    lines += ["", "| backbone | VAE / plain-bce (medians) | paired per round | VAE / plain-default |",
              "|---|---|---|---|"]
    for b in res["backbones"]:
        lines.append(f"| {b['backbone']} | {b['ratio_vae_vs_plain_bce']} | {b['paired_ratios_vs_plain_bce']} | "
                     f"{b['ratio_vae_vs_plain_default']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--images", type=int, default=5120)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backbones", default="conv-modified,dense")
    p.add_argument("--smoke", action="store_true", help="tiny slices, one round: checks the code runs")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    if a.smoke:
        a.rounds, a.warmup, a.images = 1, 0, 256
    threads = a.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    info = machine_info()
    bundle = slice_bundle(load_dataset("fashion-mnist"), a.images)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": info, "threads": threads,
                           "rounds": a.rounds, "warmup": a.warmup, "images": a.images, "smoke": a.smoke,
                           "command": "python benchmarks/bench_vae.py " + " ".join(argv or sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="aelab-bench-vae-") as tmp:
        res["backbones"] = [run_backbone(b, bundle, a.rounds, a.warmup, threads, tmp)
                            for b in a.backbones.split(",")]
    res["load_average_end"] = load_average()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-vae" + ("-smoke" if a.smoke else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
