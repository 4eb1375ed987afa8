"""Real data sets for the tests and benchmarks of images at real sizes (issue 30), built deterministically.

    .venv/bin/python benchmarks/datasets.py list                                  # the photographs, and why not others
    .venv/bin/python benchmarks/datasets.py patches --size 32 64 --out /work/data  # patches-32.npz, patches-64.npz
    .venv/bin/python benchmarks/datasets.py fashion --size 64 128 --out /work/data # fashion-mnist-64.npz, ...-128.npz
    .venv/bin/python benchmarks/datasets.py big --size 32 --gb 1 --out /work/data  # patches-32-1gb.npy

- **Natural-image patches** (``patches-P.npz``): the colour photographs bundled with scikit-image and
  scikit-learn (PHOTOS; nothing is downloaded), cut into P x P RGB patches. Split **by photograph**: the
  photographs of TEST_PHOTOS are the test set, the others the training set. Training patches lie at random
  positions (uniform over every position inside the photograph; ``coverage`` x the photograph's area in patches,
  so they overlap; seeded per photograph, then shuffled); test patches lie on the non-overlapping P x P grid,
  centred, in row order, so each test pixel is judged at most once. Label: the photograph's index; class names:
  the photographs' names (the test labels therefore never occur in training: kNN accuracy on this set means
  nothing).
- **Fashion-MNIST enlarged** (``fashion-mnist-S.npz``): the official IDX files (aelab's own loader, checksums
  checked), bilinear (``torch.nn.functional.interpolate``, ``align_corners=False``, no antialiasing) to S x S,
  rounded to uint8, in chunks; the official train and test splits, labels and class names.
- **Larger than memory** (``patches-P-Ggb.npy``): training patches of the patch set, G x 10^9 bytes of them.
  Copy 0 is the training images of ``patches-P.npz``, in order; copy k is a new seeded draw of positions in the
  same training photographs, flipped or transposed by the k % 8-th symmetry of the square, so no two copies are
  equal. Written chunk by chunk through memory-mapped windows of a file made by ``np.lib.format.open_memmap``
  (its space reserved first), never held in memory.

Every file is written to a temporary file beside it and renamed into place, with a ``.json`` record beside it
(counts, seconds, the sha256 of the arrays' content, versions). Bad options: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image

from aelab.data import dataset_info, load_raw
from aelab.errors import AelabError, ConfigError, OutputError
from aelab.files import atomic_write_with, temp_beside, user_cache_dir, write_json

SKIMAGE_DIR = Path(skimage.data.__file__).parent  # scikit-image's bundled files: read from here, never fetched
# name -> (the file that must be bundled, the loader); every one an RGB uint8 photograph (H, W, 3)
PHOTOS: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("skimage:astronaut.png", skimage.data.astronaut),
    "chelsea": ("skimage:chelsea.png", skimage.data.chelsea),
    "coffee": ("skimage:coffee.png", skimage.data.coffee),
    "rocket": ("skimage:rocket.jpg", skimage.data.rocket),
    "motorcycle": ("skimage:motorcycle_left.png", lambda: skimage.data.stereo_motorcycle()[0]),
    "hubble_deep_field": ("skimage:hubble_deep_field.jpg", skimage.data.hubble_deep_field),
    "immunohistochemistry": ("skimage:ihc.png", skimage.data.immunohistochemistry),
    "retina": ("skimage:retina.jpg", skimage.data.retina),
    "china": ("sklearn:china.jpg", lambda: load_sample_image("china.jpg")),
    "flower": ("sklearn:flower.jpg", lambda: load_sample_image("flower.jpg")),
}
LEFT_OUT = {  # colour images of skimage.data that are not used, and why
    "cat": "the same pixels as chelsea (would put one photograph on both sides)",
    "colorwheel": "a drawing, not a photograph", "logo": "a drawing with transparency, not a photograph",
    "skin": "not bundled: needs a download through pooch", "lily": "not bundled (pooch download); 4-channel microscopy",
}
TEST_PHOTOS = ("astronaut", "coffee", "china")
SIZES = (32, 64)
GB = 10**9


@dataclass
class PatchSet:
    x: np.ndarray  # uint8 (n, P, P, 3), training patches (shuffled)
    y: np.ndarray  # int64 (n,), photograph index
    x_test: np.ndarray  # uint8 (m, P, P, 3), test patches (grid, photograph by photograph)
    y_test: np.ndarray
    classes: tuple[str, ...]  # the photographs' names, in PHOTOS order
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {"train": n, "test": m, "h":, "w":}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "x_test": self.x_test, "y_test": self.y_test,
                "classes": np.array(self.classes)}


# ------------------------------------------------------------------------------------------ the photographs
def photo_file(name: str) -> Path:
    where, file = PHOTOS[name][0].split(":")
    if where == "skimage":
        return SKIMAGE_DIR / file
    return Path(str(importlib.resources.files("sklearn.datasets") / "images" / file))


def load_photos(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{name: uint8 (H, W, 3)} of the photographs, read from the installed packages only (never downloaded)."""
    out = {}
    for name in names or PHOTOS:
        if name not in PHOTOS:
            raise ConfigError(f"unknown photograph {name!r}; choose from {', '.join(PHOTOS)}")
        if not photo_file(name).is_file():  # checked first: a loader would otherwise try a download
            raise ConfigError(f"photograph {name!r}: {photo_file(name)} is not installed; install scikit-image >= "
                              f"0.22 and scikit-learn (they bundle it)")
        img = np.ascontiguousarray(PHOTOS[name][1]())
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, (name, img.shape, img.dtype)
        out[name] = img
    return out


def check_split(test_photos: Sequence[str], size: int, photos: dict[str, np.ndarray], coverage: float) -> None:
    if not 0 < coverage <= 100:
        raise ConfigError(f"--coverage {coverage}: give training patches per photograph area from 0 to 100")
    unknown = [t for t in test_photos if t not in PHOTOS]
    if unknown:
        raise ConfigError(f"--test-photos: unknown photograph {unknown[0]!r}; choose from {', '.join(PHOTOS)}")
    if not test_photos or len(set(test_photos)) == len(PHOTOS):
        raise ConfigError("--test-photos must name at least one photograph and leave at least one for training")
    small = min(min(p.shape[:2]) for p in photos.values())
    if not 4 <= size <= small:
        raise ConfigError(f"--size {size}: patches must be 4 to {small} pixels (the smallest photograph's side)")


# ------------------------------------------------------------------------------------------ patches
def photo_rng(seed: int, size: int, copy: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, size, copy, zlib.crc32(name.encode())])


def draw(photos: dict[str, np.ndarray], names: Sequence[str], size: int, coverage: float, seed: int, copy: int,
         per_photo: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photograph index into ``names``, top, left) of the random training patches of one copy, shuffled:
    ``coverage`` x each photograph's area in patches, or ``per_photo`` patches from each (balanced)."""
    pid, ys, xs = [], [], []
    for k, name in enumerate(names):
        h, w = photos[name].shape[:2]
        n = per_photo or max(1, round(coverage * h * w / size**2))
        rng = photo_rng(seed, size, copy, name)
        pid.append(np.full(n, k))
        ys.append(rng.integers(0, h - size + 1, n))
        xs.append(rng.integers(0, w - size + 1, n))
    order = np.random.default_rng([seed, size, copy]).permutation(sum(len(p) for p in pid))
    return np.concatenate(pid)[order], np.concatenate(ys)[order], np.concatenate(xs)[order]


def grid(shape: tuple[int, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(top, left) of the non-overlapping size x size grid, centred in the photograph, row by row."""
    h, w = shape[:2]
    ny, nx = h // size, w // size
    ys = (h - ny * size) // 2 + size * np.arange(ny)
    xs = (w - nx * size) // 2 + size * np.arange(nx)
    return np.repeat(ys, nx), np.tile(xs, ny)


def cut(images: Sequence[np.ndarray], size: int, pid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """uint8 (n, size, size, 3): the patch of ``images[pid[i]]`` at (ys[i], xs[i]) for every i."""
    out = np.empty((len(pid), size, size, 3), dtype=np.uint8)
    for k in np.unique(pid):
        m = pid == k
        windows = np.lib.stride_tricks.sliding_window_view(images[k], (size, size), axis=(0, 1))
        out[m] = windows[ys[m], xs[m]].transpose(0, 2, 3, 1)  # (n, 3, P, P) -> (n, P, P, 3)
    return out


def symmetry(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) symmetry of the square applied to patches (n, P, P, C): flips and a transpose."""
    if k & 1:
        x = x[:, :, ::-1]
    if k & 2:
        x = x[:, ::-1]
    if k & 4:
        x = x.transpose(0, 2, 1, 3)
    return np.ascontiguousarray(x)


def build_patches(size: int, seed: int = 0, coverage: float = 4.0, test_photos: Sequence[str] = TEST_PHOTOS,
                  photos: dict[str, np.ndarray] | None = None, per_photo: int | None = None) -> PatchSet:
    """The patch set of ``size`` x ``size`` (module docstring): training patches random, test patches on a grid."""
    photos = photos or load_photos()
    check_split(test_photos, size, photos, coverage)
    classes = tuple(PHOTOS)
    train = [n for n in classes if n not in test_photos]
    pid, ys, xs = draw(photos, train, size, coverage, seed, copy=0, per_photo=per_photo)
    x = cut([photos[n] for n in train], size, pid, ys, xs)
    y = np.array([classes.index(n) for n in train], dtype=np.int64)[pid]
    tests, labels = [], []
    for name in (n for n in classes if n in test_photos):
        ty, tx = grid(photos[name].shape, size)
        tests.append(cut([photos[name]], size, np.zeros(len(ty), dtype=np.int64), ty, tx))
        labels.append(np.full(len(ty), classes.index(name), dtype=np.int64))
    counts = {n: {"train": int((y == k).sum()), "test": sum(int((t == k).sum()) for t in labels),
                  "h": int(photos[n].shape[0]), "w": int(photos[n].shape[1])} for k, n in enumerate(classes)}
    return PatchSet(x, y, np.concatenate(tests), np.concatenate(labels), classes, counts)


# ------------------------------------------------------------------------------------------ Fashion-MNIST enlarged
def enlarge(images: np.ndarray, size: int, chunk_bytes: int = 256 << 20) -> np.ndarray:
    """uint8 (n, h, w) -> uint8 (n, size, size), bilinear (align_corners=False, no antialias), chunk by chunk."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    step = max(1, chunk_bytes // (4 * size * size))
    with torch.no_grad():
        for s in range(0, len(images), step):
            x = torch.from_numpy(images[s:s + step].astype(np.float32))[:, None]  # a copy: the raw arrays are read-only
            big = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
            out[s:s + step] = big[:, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def build_fashion(size: int, limit: int | None = None, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The official Fashion-MNIST train and test splits (the first ``limit`` images of each) at size x size."""
    if not 28 <= size <= 1024:
        raise ConfigError(f"--size {size}: give an enlarged size from 28 to 1024 pixels")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give a positive number of images per split")
    (train_x, train_y, test_x, test_y), _ = load_raw("fashion-mnist", data_dir)
    train_x, train_y, test_x, test_y = (a[:limit] for a in (train_x, train_y, test_x, test_y))
    return {"x": enlarge(train_x, size), "y": train_y.astype(np.int64), "x_test": enlarge(test_x, size),
            "y_test": test_y.astype(np.int64), "classes": np.array(dataset_info("fashion-mnist").classes)}


# ------------------------------------------------------------------------------------------ files
def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the arrays' names, types, shapes and bytes (the .npz bytes hold times; this does not)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.data)
    return h.hexdigest()


def versions() -> dict[str, str]:
    return {d: importlib.metadata.version(d) for d in ("numpy", "scikit-image", "scikit-learn", "torch", "pillow")}


def write_npz(path: Path, arrays: dict[str, np.ndarray], record: dict) -> dict:
    """``arrays`` as an uncompressed .npz and ``record`` (plus shapes, digest, versions) as PATH.json, atomically."""
    atomic_write_with(path, lambda fh: np.savez(fh, **arrays))
    record = {"file": str(path), "bytes": path.stat().st_size, **record,
              "shapes": {k: list(a.shape) for k, a in arrays.items()}, "digest": content_digest(arrays),
              "versions": versions()}
    write_json(path.with_suffix(".json"), record)
    return record


def build_big(path: Path, size: int, gb: float, seed: int = 0, coverage: float = 4.0,
              test_photos: Sequence[str] = TEST_PHOTOS, chunk_mb: float = 64, progress: bool = True,
              photos: dict[str, np.ndarray] | None = None) -> dict:
    """Write ``gb`` x 10^9 bytes of training patches to ``path`` (.npy, module docstring), one chunk at a time."""
    photos = photos or load_photos()
    check_split(test_photos, size, photos, coverage)
    row = size * size * 3
    n = int(gb * GB) // row if 0 < gb < 1e12 else 0
    if n < 1:
        raise ConfigError(f"--gb {gb}: give a size in GB from one {size}x{size} patch ({row} bytes) up to the free "
                          f"disk")
    need = n * row + 4096
    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    if need > free:
        raise OutputError(f"{path}: needs {need / GB:.2f} GB, only {free / GB:.2f} GB free there; free some space "
                          f"or give a smaller --gb")
    train = [p for p in PHOTOS if p not in test_photos]
    images = [photos[p] for p in train]
    step = max(1, int(chunk_mb * 2**20) // row)
    tmp = temp_beside(path)
    start, done, copy, shown = time.perf_counter(), 0, 0, -1
    try:
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        offset = header.offset
        del header  # the file now has its header and its length; the windows below write the patches
        with open(tmp, "r+b") as fh:
            try:
                os.posix_fallocate(fh.fileno(), 0, offset + n * row)  # a full disk fails here, not mid-write
            except OSError as err:
                raise OutputError(f"cannot write {path}: {err.strerror}; free some space or give a smaller --gb") \
                    from None
        while done < n:
            pid, ys, xs = draw(photos, train, size, coverage, seed, copy)
            m = min(len(pid), n - done)
            for s in range(0, m, step):
                e = min(m, s + step)
                window = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=offset + (done + s) * row,
                                   shape=(e - s, size, size, 3))
                window[:] = symmetry(cut(images, size, pid[s:e], ys[s:e], xs[s:e]), copy % 8)
                window.flush()
                del window  # unmapped: the written pages leave this process
            done, copy = done + m, copy + 1
            if progress and (pct := 100 * done // n) // 5 != shown // 5:
                shown = pct
                print(f"  {done:,}/{n:,} patches ({pct}%), copy {copy}, {time.perf_counter() - start:.1f} s",
                      flush=True)
        with open(tmp, "r+b") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    record = {"file": str(path), "bytes": path.stat().st_size, "kind": "patches-big", "size": size, "images": n,
              "copies": copy, "seed": seed, "coverage": coverage, "test_photos": list(test_photos),
              "train_photos": train, "seconds": round(time.perf_counter() - start, 2), "versions": versions()}
    write_json(path.with_suffix(".json"), record)
    return record


# ------------------------------------------------------------------------------------------ command line
def default_out() -> Path:
    return Path(os.environ.get("AELAB_BENCH_DATA") or user_cache_dir() / "bench-data")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the photographs used, their sizes, and the colour images left out")
    cmds = {"patches": "natural-image patch sets (.npz)", "fashion": "Fashion-MNIST enlarged (.npz)",
            "big": "a .npy of patches larger than memory"}
    for name, text in cmds.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", type=Path, default=default_out(),
                       help="output folder (default: $AELAB_BENCH_DATA or ~/.cache/aelab/bench-data)")
        p.add_argument("--size", type=int, nargs="+", default=[32] if name == "big" else
                       list(SIZES) if name == "patches" else [64, 128], help="patch or image side(s) in pixels")
        if name == "fashion":
            p.add_argument("--limit", type=int, help="only the first N images of each split")
            p.add_argument("--data-dir", help="folder of the IDX files (default: aelab's discovery, AELAB_DATA_DIR)")
        else:
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--coverage", type=float, default=4.0,
                           help="training patches per photograph = coverage x area / P^2 (default 4)")
            p.add_argument("--test-photos", nargs="+", default=list(TEST_PHOTOS), help="the test photographs")
        if name == "patches":
            p.add_argument("--per-photo", type=int, help="N training patches from each photograph, whatever its "
                           "size (balanced; instead of --coverage), written as patches-P-ppN.npz")
        if name == "big":
            p.add_argument("--gb", type=float, default=1.0, help="file size in 10^9 bytes (default 1)")
            p.add_argument("--chunk-mb", type=float, default=64, help="patches written per chunk, MiB (default 64)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.command == "list":
        for name, img in load_photos().items():
            print(f"{name:22s} {img.shape[0]:5d} x {img.shape[1]:<5d} {PHOTOS[name][0]}"
                  f"{'  (test)' if name in TEST_PHOTOS else ''}")
        for name, why in LEFT_OUT.items():
            print(f"{name:22s} left out: {why}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for size in args.size:
        start = time.perf_counter()
        if args.command == "patches":
            print(f"patches {size}x{size}: cutting ...", flush=True)
            if args.per_photo is not None and not 0 < args.per_photo <= 10**6:
                raise ConfigError(f"--per-photo {args.per_photo}: give 1 to 1,000,000 patches per photograph")
            ps = build_patches(size, args.seed, args.coverage, args.test_photos, per_photo=args.per_photo)
            seconds = round(time.perf_counter() - start, 2)
            for name, c in ps.counts.items():
                print(f"  {name:22s} {c['h']:5d} x {c['w']:<5d} train {c['train']:6,d}  test {c['test']:5,d}")
            stem = f"patches-{size}" + (f"-pp{args.per_photo}" if args.per_photo else "")
            rec = write_npz(args.out / f"{stem}.npz", ps.arrays(), {
                "kind": "patches", "size": size, "seed": args.seed,
                **({"per_photo": args.per_photo} if args.per_photo else {"coverage": args.coverage}),
                "train_layout": "random positions, shuffled", "test_layout": "non-overlapping centred grid",
                "test_photos": [n for n in ps.classes if n in args.test_photos], "counts": ps.counts,
                "seconds": seconds})
        elif args.command == "fashion":
            print(f"fashion-mnist {size}x{size}{f' (first {args.limit:,} of each split)' if args.limit else ''}: "
                  f"enlarging ...", flush=True)
            arrays = build_fashion(size, args.limit, args.data_dir)
            stem = f"fashion-mnist-{size}" + (f"-limit{args.limit}" if args.limit else "")
            rec = write_npz(args.out / f"{stem}.npz", arrays, {
                "kind": "fashion-mnist", "size": size, "limit": args.limit, "resize": "bilinear, align_corners=False, "
                "no antialias (torch.nn.functional.interpolate), rounded", "seconds": round(time.perf_counter() -
                                                                                            start, 2)})
        else:
            print(f"big patches {size}x{size}, {args.gb:g} GB ...", flush=True)
            rec = build_big(args.out / f"patches-{size}-{args.gb:g}gb.npy", size, args.gb, args.seed, args.coverage,
                            args.test_photos, args.chunk_mb)
        print(f"wrote {rec['file']} ({rec['bytes'] / 2**20:,.1f} MiB) in {time.perf_counter() - start:.1f} s",
              flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        run(args)
    except AelabError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
