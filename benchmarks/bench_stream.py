"""Data read from disk (data.stream, data.shards): speed and memory against the same data in memory.

    python benchmarks/bench_stream.py [--quick] [--only train,big,decode,evaluate] [--big-gb 1] [--pngs 20000]
    python benchmarks/bench_stream.py --only big --big-file /work/data/patches-32-46gb.npy --big-limit 10240 \
        --big-models dense,resnet --big-epochs 2 --big-rounds 2    # a file 2x the free memory

Each measurement runs in a fresh child process, which reports its own peak resident memory (``VmHWM``: torch's
import alone is ~310 MB) and its timings:

- **train**: the same model, seed and batches on a Fashion-MNIST .npy read into memory and read from disk, in
  alternating runs (the median images/s of the epochs after the first; the ratio is from disk over in memory);
- **big**: a .npy of ``--big-gb`` GB of real images (Fashion-MNIST repeated), or ``--big-file`` (the photo
  patches of ``datasets.py big``), trained on from disk, ``--big-limit`` images an epoch drawn (seeded) over the
  whole file, its pages dropped from the page cache before every epoch so that every read goes to the disk;
  against the same model on an in-memory slice of as many images, in alternating runs: images/s (median of
  all epochs, both sides) and peak memory;
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import load_average, machine_info, machine_slug

from aelab.data import load_raw

ROOT = Path(__file__).resolve().parent

TRAIN = """
import json, os, sys, tempfile, time
from pathlib import Path
from aelab.config import resolve
from aelab.data import load_dataset
from aelab.runs import Run
from aelab.training import Trainer
path, stream, model, epochs, limit = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4]), sys.argv[5]
evict = len(sys.argv) > 6 and sys.argv[6] == "1"
cfg = resolve(overrides=dict(dataset=f"npy:{path}", model=model, width=0.5, latent=16, epochs=epochs, batch_size=128,
                             threads=2, report=False, precision="fp32", patience=0, val_fraction=0.0,
                             train_limit=None if limit == "0" else int(limit)))


def drop_cache(*_):  # the file's pages out of the page cache: every epoch reads from the disk itself
    if evict:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


t0 = time.perf_counter()
bundle = load_dataset(cfg.dataset, progress=False, stream=stream, **cfg.data_kwargs())
loaded = time.perf_counter() - t0
drop_cache()
state = Trainer(cfg, Run(Path(tempfile.mkdtemp())), bundle=bundle, progress=False, on_epoch_end=drop_cache).fit()
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"peak_mb": round(hwm[0] / 1024), "load_s": round(loaded, 2), "images": len(bundle.train),
                  "store": type(bundle.train.images).__name__, "shape": list(bundle.shape),
                  "images_per_s": [h["images_per_s"] for h in state.history]}))
"""

DECODE = """
import json, sys, time
from aelab.data import folders, shards
files = folders.scan(sys.argv[1]).files
channels, side = int(sys.argv[3]), int(sys.argv[4])
out = {1: [], int(sys.argv[2]): []}
for r in range(int(sys.argv[5])):  # rounds, the order alternating
    for workers in (list(out) if r % 2 == 0 else list(out)[::-1]):
        t0 = time.perf_counter()
        n = sum(len(p) for p in shards.decode_chunks(files, channels, (side, side), progress=False, workers=workers))
        out[workers].append(round(n / (time.perf_counter() - t0), 1))
print(json.dumps(out))
"""

# The ceiling of decoding on k cores: k processes started together, each decoding its own k-th of the files on
# its own (no pool, nothing sent between them); images/s = all files / the slowest one's time.
DECODE_PART = """
import json, sys, time
from aelab.data import folders
files = folders.scan(sys.argv[1]).files[int(sys.argv[2])::int(sys.argv[3])]
t0 = time.perf_counter()
n = len(folders.decode(files, int(sys.argv[4]), (int(sys.argv[5]),) * 2, progress=False))
print(json.dumps({"images": n, "seconds": time.perf_counter() - t0}))
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


def section_train(record: dict[str, Any], work: Path, train_x: np.ndarray, repeats: int, epochs: int) -> None:
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


def section_big(record: dict[str, Any], work: Path, train_x: np.ndarray, args: argparse.Namespace) -> None:
    """Training from a file larger than memory against the same model on an in-memory slice of it."""
    if args.big_file:
        big = args.big_file
    else:
        big = work / "big.npy"
        write_npy(big, train_x, int(args.big_gb * 1e9) // train_x[0].size)
    size, free = big.stat().st_size, free_memory()
    rows = np.load(big, mmap_mode="r")
    limit = min(args.big_limit, len(rows))
    small = work / "slice.npy"  # the in-memory contender: the same shape, the same count drawn the same way
    np.save(small, np.ascontiguousarray(rows[:min(len(rows), 2 * limit)]))
    del rows
    out: dict[str, Any] = {"file": str(big), "file_gb": round(size / 1e9, 2), "free_memory_gb": round(free / 1e9, 1),
                           "file_over_free_memory": round(size / free, 2), "images_per_epoch": limit,
                           "epochs": args.big_epochs, "cold_reads": "the file's pages dropped from the page cache "
                           "(posix_fadvise DONTNEED) before every epoch of the run from disk", "runs": []}
    for model in args.big_models.split(","):
        for r in range(args.big_rounds):
            for kind in (("memory", "disk") if r % 2 == 0 else ("disk", "memory")):  # alternating
                got = (child(TRAIN, big, "1", model, args.big_epochs, limit, "1") if kind == "disk"
                       else child(TRAIN, small, "0", model, args.big_epochs, limit))
                out["runs"].append({"model": model, "round": r, **got, "kind": kind})
                print(json.dumps(out["runs"][-1]), flush=True)
        med = {k: statistics.median(s for x in out["runs"] if x["model"] == model and x["kind"] == k
                                    for s in x["images_per_s"]) for k in ("memory", "disk")}
        out[f"{model}_images_per_s"] = med
        out[f"{model}_ratio"] = round(med["disk"] / med["memory"], 3)
        out[f"{model}_peak_mb_disk"] = max(x["peak_mb"] for x in out["runs"]
                                           if x["model"] == model and x["kind"] == "disk")
    record["big"] = out
    if not args.big_file:
        big.unlink()


def decode_ceiling(folder: Path, k: int, channels: int, side: int) -> float:
    procs = [subprocess.Popen([sys.executable, "-c", DECODE_PART, str(folder), str(i), str(k), str(channels),
                               str(side)], stdout=subprocess.PIPE, text=True) for i in range(k)]
    got = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return round(sum(g["images"] for g in got) / max(g["seconds"] for g in got), 1)


def section_decode(record: dict[str, Any], work: Path, images: np.ndarray, n_png: int, side: int) -> None:
    """PNGs of Fashion-MNIST (28 px grey) or, with ``side`` > 28, of colour photo patches (datasets.py)."""
    from PIL import Image
    if side > 28:
        from datasets import build_patches
        images = build_patches(side).x
    pngs = work / f"pngs-{side}"
    for i in range(n_png):
        (pngs / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i % len(images)]).save(pngs / f"c{i % 10}" / f"{i:05d}.png")
    cores = len(os.sched_getaffinity(0))
    channels = 3 if images.ndim == 4 else 1
    rounds = 3
    runs = child(DECODE, pngs, cores, channels, side, rounds)
    speed = {k: statistics.median(v) for k, v in runs.items()}
    alone: dict[int, list[float]] = {1: [], cores: []}
    for r in range(rounds):
        for k in (list(alone) if r % 2 == 0 else list(alone)[::-1]):
            alone[k].append(decode_ceiling(pngs, k, channels, side))
    ceiling = statistics.median(alone[cores]) / statistics.median(alone[1])
    speedup = speed[str(cores)] / speed["1"]
    record.setdefault("decode", []).append({
        "images": n_png, "side": side, "channels": channels, "rounds": rounds, "images_per_s": runs,
        "speedup": round(speedup, 2), "ceiling_images_per_s": alone, "ceiling_speedup": round(ceiling, 2),
        "share_of_ceiling": round(speedup / ceiling, 2)})
    shutil.rmtree(pngs)


def section_evaluate(record: dict[str, Any], work: Path, train_x: np.ndarray, test_x: np.ndarray,
                     quick: bool) -> None:
    import torch
    n_test = 1_000 if quick else 10_000
    n_all = n_test + (5_000 if quick else 50_000)
    source = np.concatenate([test_x, train_x])[:n_all, None]
    with (work / "f128.npy").open("wb") as fh:  # enlarged 2,000 at a time
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (n_all, 128, 128)})
        for i in range(0, n_all, 2_000):
            part = torch.nn.functional.interpolate(torch.from_numpy(source[i:i + 2_000]).float(), size=(128, 128),
                                                   mode="bilinear", align_corners=False)
            fh.write(part.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy().tobytes())
    record["evaluate_128"] = child(EVALUATE, work / "f128.npy", n_test / n_all)


SECTIONS = ("train", "big", "decode", "evaluate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat (a quick run: say so)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    ap.add_argument("--big-gb", type=float, default=1.0, help="big: size of the Fashion-MNIST file written")
    ap.add_argument("--big-file", type=Path, help="big: an existing uint8 .npy instead (datasets.py big)")
    ap.add_argument("--big-limit", type=int, default=4096, help="big: training images per epoch, seeded over the file")
    ap.add_argument("--big-models", default="dense")
    ap.add_argument("--big-epochs", type=int, default=1)
    ap.add_argument("--big-rounds", type=int, default=1)
    ap.add_argument("--pngs", type=int, default=20_000, help="decode: images in the folder")
    ap.add_argument("--png-sides", type=int, nargs="+", default=[28],
                    help="decode: 28 (Fashion-MNIST, grey) and/or larger sides (colour photo patches)")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    only = args.only.split(",")
    if unknown := sorted(set(only) - set(SECTIONS)):
        ap.error(f"--only: unknown section {unknown[0]}; choose from {', '.join(SECTIONS)}")
    (train_x, _, test_x, _), _ = load_raw("fashion-mnist")
    record: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "sections": only}
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    if "train" in only:
        section_train(record, work, train_x, *((1, 2) if args.quick else (3, 3)))
    if "big" in only:
        section_big(record, work, train_x, args)
    if "decode" in only:
        for side in args.png_sides:
            section_decode(record, work, np.concatenate([train_x, test_x]), 2_000 if args.quick else args.pngs, side)
    if "evaluate" in only:
        section_evaluate(record, work, train_x, test_x, args.quick)
    record["machine"]["load_average_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = (time.strftime("%Y-%m-%d") + "-" + machine_slug(record["machine"]) + "-stream"
            + ("" if set(only) == set(SECTIONS) else "-" + "-".join(only)) + ("-quick" if args.quick else ""))
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "train"}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
