"""Images at real sizes (issue 30): the resnet family, conv-modified, dense and PCA on real photographs' patches
and on Fashion-MNIST at 28, 64 and 128 px, through the command line a user types.

Every step is one ``aelab train`` into its own run folder (a finished folder, one with ``metrics.json``, is read
back instead of retrained, so the script resumes where it stopped), then one JSON line per run in
``benchmarks/results/real-sizes.jsonl`` (the machine and its load with it) and the table in
``benchmarks/results/real-sizes.md``. PCA is the baseline each run's evaluation fits at the same latent size
on the same training images. The data sets are built first by ``benchmarks/datasets.py`` (patches split by
photograph; Fashion-MNIST enlarged, bilinear).

    python benchmarks/datasets.py patches --size 32 -o /work/data/patches-32.npz      # and 64; fmnist 64/128
    python benchmarks/real_sizes.py --data /work/data --runs /work/runs/real-sizes [--only NAME ...]

The budgets are small (epochs and training images capped so that the whole table fits in an hour on two cores):
the table says so on every row; it is a quick measurement, not the study.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import load_average, machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name, data file (under --data, or a built-in name), model, latent, epochs, extra options
STEPS: list[tuple[str, str, str, int, int, list[str]]] = [
    ("patches32-resnet-64", "patches-32.npz", "resnet", 64, 8, []),
    ("patches32-resnet-64-mse", "patches-32.npz", "resnet", 64, 8, ["--loss", "mse"]),
    ("patches32pp-resnet-64", "patches-32-pp2500.npz", "resnet", 64, 8, []),
    ("patches32pp-resnet-64-30ep", "patches-32-pp2500.npz", "resnet", 64, 30, []),
    ("patches32pp-resnet-256", "patches-32-pp2500.npz", "resnet", 256, 8, []),
    ("patches32-convmod-64", "patches-32.npz", "conv-modified", 64, 8, []),
    ("patches32-dense-64", "patches-32.npz", "dense", 64, 8, []),
    ("patches64-resnet-64", "patches-64.npz", "resnet", 64, 10, []),
    ("patches64-resnet-256", "patches-64.npz", "resnet", 256, 10, []),
    ("patches64-convmod-64", "patches-64.npz", "conv-modified", 64, 10, []),
    ("patches64-dense-64", "patches-64.npz", "dense", 64, 10, []),
    ("fmnist28-resnet-64", "fashion-mnist", "resnet", 64, 3, ["--train-limit", "10000"]),
    ("fmnist28-convmod-64", "fashion-mnist", "conv-modified", 64, 3, ["--train-limit", "10000"]),
    ("fmnist28-dense-64", "fashion-mnist", "dense", 64, 3, ["--train-limit", "10000"]),
    ("fmnist64-resnet-64", "fashion-mnist-64.npz", "resnet", 64, 3, ["--train-limit", "10000"]),
    ("fmnist64-convmod-64", "fashion-mnist-64.npz", "conv-modified", 64, 3, ["--train-limit", "10000"]),
    ("fmnist64-dense-64", "fashion-mnist-64.npz", "dense", 64, 3, ["--train-limit", "10000"]),
    ("fmnist128-resnet-64", "fashion-mnist-128.npz", "resnet", 64, 3, ["--train-limit", "5000"]),
    ("fmnist128-convmod-64", "fashion-mnist-128.npz", "conv-modified", 64, 3, ["--train-limit", "5000"]),
    ("fmnist128-dense-64", "fashion-mnist-128.npz", "dense", 64, 3, ["--train-limit", "5000"]),
]
# The family's recipe here: AdamW at lr 2e-3 (5e-3, the 28x28 recipe's, was worse for resnet in a quick check),
# batch 64, MSE + 0.1 (1 - SSIM), one-cycle; fp32 so rows compare like with like on any CPU.
COMMON = ["--lr", "2e-3", "--batch-size", "64", "--precision", "fp32", "--no-report", "-q"]


def dataset_arg(data: Path, source: str) -> str:
    return source if source in ("fashion-mnist", "mnist") else f"npz:{data / source}"


def row_of(name: str, metrics: dict[str, Any], extra: list[str], seconds: float | None) -> dict[str, Any]:
    run, ae, pca = metrics["run"], metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
    return {"name": name, "model": run["model"], "latent": run["latent"], "shape": metrics["split"]["shape"],
            "train_images": metrics["split"]["train"], "test_images": metrics["split"]["test"],
            "epochs": run["epochs"], "parameters": run.get("parameters"), "precision": run.get("precision"),
            "train_seconds": run.get("train_seconds"), "command_seconds": seconds, "options": extra,
            "ae": {k: ae.get(k) for k in ("ssim", "psnr", "mse")},
            "pca": {k: pca.get(k) for k in ("ssim", "psnr", "mse")}}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| run | shape (C,H,W) | model | latent | train images | epochs | s/epoch | SSIM AE / PCA | "
            "MSE AE / PCA | PSNR AE / PCA | AE above PCA on SSIM and MSE |\n"
            "|---|---|---|---:|---:|---:|---:|---|---|---|---|")
    lines = [head]
    for r in rows:
        a, p = r["ae"], r["pca"]
        per_epoch = r["train_seconds"] / r["epochs"] if r.get("train_seconds") and r["epochs"] else float("nan")
        above = "yes" if a["ssim"] > p["ssim"] and a["mse"] < p["mse"] else "no"
        lines.append(f"| {r['name']} | {tuple(r['shape'])} | {r['model']} | {r['latent']} | {r['train_images']:,} | "
                     f"{r['epochs']} | {per_epoch:.0f} | {a['ssim']:.4f} / {p['ssim']:.4f} | "
                     f"{a['mse']:.5f} / {p['mse']:.5f} | {a['psnr']:.2f} / {p['psnr']:.2f} | {above} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/data"), help="folder of benchmarks/datasets.py's files")
    ap.add_argument("--runs", type=Path, default=Path("runs/real-sizes"), help="where the run folders go")
    ap.add_argument("--only", nargs="*", help="step names to run (default: all, in order)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out_jsonl, out_md = RESULTS / "real-sizes.jsonl", RESULTS / "real-sizes.md"
    done = {}
    if out_jsonl.is_file():
        for line in out_jsonl.read_text().splitlines():
            rec = json.loads(line)
            done[rec["name"]] = rec
    machine = machine_info()
    aelab = str(Path(sys.executable).with_name("aelab"))
    for name, source, model, latent, epochs, extra in STEPS:
        if args.only and name not in args.only:
            continue
        if name in done:
            continue
        folder = args.runs / name
        seconds = None
        if not (folder / "metrics.json").is_file():
            cmd = [aelab, "train", "--dataset", dataset_arg(args.data, source), "--model", model, "--latent",
                   str(latent), "--epochs", str(epochs), "--out", str(folder), *COMMON, *extra]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if folder.exists():
                cmd = [aelab, "train", "--resume", str(folder), "-q"]
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
            load0, t0 = load_average(), time.perf_counter()
            proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            seconds = round(time.perf_counter() - t0, 1)
            if proc.returncode != 0:
                print(f"{name}: exit {proc.returncode}; skipped", flush=True)
                continue
        else:
            load0 = None
        metrics = json.loads((folder / "metrics.json").read_text())
        rec = row_of(name, metrics, extra, seconds) | {"load_average_start": load0, "load_average_end": load_average(),
                                                       "cpu": machine["cpu_model"], "date": time.strftime("%Y-%m-%d"),
                                                       "quick": True}
        done[name] = rec
        with out_jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"{name}: SSIM {rec['ae']['ssim']:.4f} (PCA {rec['pca']['ssim']:.4f}), MSE {rec['ae']['mse']:.5f} "
              f"(PCA {rec['pca']['mse']:.5f})", flush=True)
    rows = [done[n] for n, *_ in STEPS if n in done]
    missing = [n for n, *_ in STEPS if n not in done]
    out_md.write_text(f"# Images at real sizes: quick measurement{' (PARTIAL)' if missing else ''}\n\n"
                      + (f"Not run yet: {', '.join(missing)}.\n\n" if missing else "") +
                      f"`python benchmarks/real_sizes.py`, {machine['cpu_model']}, {machine['usable_cpus']} cores, "
                      f"fp32, lr 2e-3, batch 64, MSE + 0.1 (1 - SSIM). Small budgets (epochs, training images): "
                      f"a quick measurement. Test sets: the held-out photographs (patches; astronaut, coffee, "
                      f"china) or the official test split. Load averages per run in real-sizes.jsonl.\n\n"
                      + table(rows))
    print(out_md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
