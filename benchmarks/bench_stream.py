"""Data read from disk (data.stream, data.shards): speed and memory against the same data in memory.

    python benchmarks/bench_stream.py [--quick] [--big-gb 1] [--out benchmarks/results]

Each measurement runs in a fresh child process, which reports its own peak resident memory (``VmHWM``: torch's
import alone is ~310 MB) and its timings:

- **train**: the same model, seed and batches on a Fashion-MNIST .npy read into memory and read from disk, in
  alternating runs (the median images/s of the epochs after the first; the ratio is from disk over in memory);
- **big**: a .npy of ``--big-gb`` GB of real images (Fashion-MNIST repeated) trained on from disk for a few
  dozen batches: peak memory against the file's size (when the file is larger than the free memory its reads
  come from the disk itself, otherwise from the page cache: the record says which);
- **decode**: a folder of PNGs decoded on 1 process and on every core (``shards.decode_chunks``);
- **evaluate**: ``evaluate_test`` on 128x128 grey images (Fashion-MNIST enlarged, bilinear; 16,384 values per
  image), the PCA baseline fitted by its randomized solver on a seeded sample, with an untrained dense model
  (the test measures the evaluation's own passes, not a model's speed).

The machine and its load are recorded beside the numbers; timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import machine_info

from aelab.data import load_raw

ROOT = Path(__file__).resolve().parent

TRAIN = """
import json, sys, tempfile, time
from pathlib import Path
from aelab.config import resolve
from aelab.data import load_dataset
from aelab.runs import Run
from aelab.training import Trainer
path, stream, model, epochs, limit = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4]), sys.argv[5]
cfg = resolve(overrides=dict(dataset=f"npy:{path}", model=model, width=0.5, latent=16, epochs=epochs, batch_size=128,
                             threads=2, report=False, precision="fp32", patience=0,
                             train_limit=None if limit == "0" else int(limit)))
t0 = time.perf_counter()
bundle = load_dataset(cfg.dataset, progress=False, stream=stream, **cfg.data_kwargs())
loaded = time.perf_counter() - t0
state = Trainer(cfg, Run(Path(tempfile.mkdtemp())), bundle=bundle, progress=False).fit()
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"peak_mb": round(hwm[0] / 1024), "load_s": round(loaded, 2), "images": len(bundle.train),
                  "kind": type(bundle.train.images).__name__,
                  "images_per_s": [h["images_per_s"] for h in state.history]}))
"""

DECODE = """
import json, sys, time
from aelab.data import folders, shards
files = folders.scan(sys.argv[1]).files
out = {}
for workers in (1, int(sys.argv[2])):
    t0 = time.perf_counter()
    n = sum(len(p) for p in shards.decode_chunks(files, 1, (28, 28), progress=False, workers=workers))
    out[workers] = round(n / (time.perf_counter() - t0), 1)
print(json.dumps(out))
"""

EVALUATE = """
import json, sys, time
import torch
from aelab.data import load_dataset
from aelab.evaluation import evaluate_test, fit_pca
from aelab.models import build_model
b = load_dataset(f"npy:{sys.argv[1]}", stream=True, test_fraction=float(sys.argv[2]), val_fraction=0.0,
                 progress=False)
torch.manual_seed(0)
model = build_model("dense", latent=64, shape=b.shape)
t0 = time.perf_counter()
pca = fit_pca(b, 64)
fit = time.perf_counter() - t0
metrics, passes = evaluate_test(model, b, pca)
total = time.perf_counter() - t0
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"test_images": len(b.test), "train_images": len(b.train), "pca_fit_s": round(fit, 1),
                  "pca_fitted_on": pca.fitted_on, "solver": pca.pca.svd_solver, "evaluate_s": round(total, 1),
                  "peak_mb": round(hwm[0] / 1024), "kept_reconstructions": passes.recon is not None,
                  "pca_ssim": round(metrics["pca"]["overall"]["ssim"], 4)}))
"""


def child(script: str, *args: Any, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=3600)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def free_memory() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))


def write_npy(path: Path, images: np.ndarray, rows: int) -> None:
    """``rows`` images: ``images`` repeated, written chunk by chunk (the writer holds one chunk)."""
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (rows, *images.shape[1:])})
        for i in range(0, rows, len(images)):
            fh.write(images[:rows - i].tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat (a quick run: say so)")
    ap.add_argument("--big-gb", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    (train_x, _, test_x, _), _ = load_raw("fashion-mnist")
    record: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    repeats, epochs = (1, 2) if args.quick else (3, 3)

    small = work / "fashion.npy"
    np.save(small, train_x[:12_000])
    runs: dict[str, list[dict[str, Any]]] = {"memory": [], "disk": []}
    for model in ("dense", "conv-modified"):
        for _ in range(repeats):  # alternating, so that a change of load hits both
            for kind, flag in (("memory", "0"), ("disk", "1")):
                got = child(TRAIN, small, flag, model, epochs, 0)
                runs[kind].append({"model": model, **got})
    record["train"] = runs
    for model in ("dense", "conv-modified"):
        med = {k: statistics.median(s for r in v if r["model"] == model for s in r["images_per_s"][1:])
               for k, v in runs.items()}
        record[f"train_{model}_ratio"] = round(med["disk"] / med["memory"], 3)
        record[f"train_{model}_images_per_s"] = med

    rows = int(args.big_gb * (1 << 30)) // 784
    big = work / "big.npy"
    write_npy(big, train_x, rows)
    size = big.stat().st_size
    record["big"] = {"file_gb": round(size / 1e9, 2), "free_memory_gb": round(free_memory() / 1e9, 1),
                     "reads_from": "disk" if size > free_memory() else "page cache",
                     **child(TRAIN, big, "1", "dense", 1, 4096)}
    big.unlink()

    pngs = work / "pngs"
    from PIL import Image
    n_png = 2_000 if args.quick else 20_000
    for i, x in enumerate(np.concatenate([train_x, test_x])[:n_png]):
        (pngs / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(pngs / f"c{i % 10}" / f"{i:05d}.png")
    cores = len(os.sched_getaffinity(0))
    speed = child(DECODE, pngs, cores)
    record["decode"] = {"images": n_png, "images_per_s": speed, "speedup": round(speed[str(cores)] / speed["1"], 2)}

    import torch
    n_test = 1_000 if args.quick else 10_000
    n_all = n_test + (5_000 if args.quick else 50_000)
    source = np.concatenate([test_x, train_x])[:n_all, None]
    with (work / "f128.npy").open("wb") as fh:  # enlarged 2,000 at a time
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (n_all, 128, 128)})
        for i in range(0, n_all, 2_000):
            part = torch.nn.functional.interpolate(torch.from_numpy(source[i:i + 2_000]).float(), size=(128, 128),
                                                   mode="bilinear", align_corners=False)
            fh.write(part.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy().tobytes())
    record["evaluate_128"] = child(EVALUATE, work / "f128.npy", n_test / n_all)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y-%m-%d") + "-stream" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "train"}, indent=1))


if __name__ == "__main__":
    main()
