"""The jobs behind ``aelab score`` and ``aelab denoise``: files in, files out.

``score_to_csv`` scores every image of an input (a data set split, an IDX file, a .npy array, a folder of
images) with the run's detector and writes one CSV row per image: its score and a flag (score above the
threshold). ``denoise_to_pngs`` writes ``input | output`` PNG pairs, or ``noisy | denoised | clean`` triplets
when ``add_noise`` corrupts clean inputs first (with the SSIM of the output against the clean image). Inputs
are read a batch at a time; outputs are written to a temporary file or folder and renamed into place at the end.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aelab.data import ImageSource, image_bytes, to_pixels
from aelab.data.noise import TEST_STREAM, NoiseSpec, generator_for
from aelab.data.pixels import side_by_side
from aelab.errors import OutputError
from aelab.evaluation.anomaly import SCORE_LABELS
from aelab.evaluation.detector import run_detector
from aelab.evaluation.metrics import ssim_per_image
from aelab.files import StagedDir, atomic_write_text, check_apart, write_target
from aelab.runs import Run
from aelab.use.api import TrainedModel, load
from aelab.use.files import open_source

SEPARATOR = 128  # grey column between the tiles of a PNG


@dataclass
class ScoreResult:
    n: int
    flagged: int
    path: Path
    score: str
    threshold: float
    quantile: float


@dataclass
class DenoiseResult:
    n: int
    path: Path
    mean_ssim: float | None = None  # of the output against the clean image (with ``add_noise`` only)


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    """A progress bar on stderr, shown only on a terminal (``disable=None``) and when ``progress``."""
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, disable=None if progress else True, leave=False)


def _count(n: int, limit: int | None) -> int:
    if limit is not None and limit < 1:
        raise OutputError(f"--limit {limit}: give a positive number of images")
    return n if limit is None else min(n, limit)


def _stem(name: str | None) -> str:
    if not name:
        return ""
    return "_" + re.sub(r"[^A-Za-z0-9.+-]+", "_", Path(name).with_suffix("").as_posix()).strip("_")[:80]


def _meta_columns(src: ImageSource) -> list[str]:
    return [*(["name"] if src.names else []), *(["label"] if src.labels is not None else []),
            *(["class"] if src.labels is not None and src.classes else [])]


def _meta(src: ImageSource, i: int) -> list[object]:
    row: list[object] = [src.names[i]] if src.names else []
    if src.labels is not None:
        row.append(int(src.labels[i]))
        if src.classes:
            row.append(src.class_name(i))
    return row


# ------------------------------------------------------------------------------------------ score
def score_to_csv(run: str | os.PathLike, source: str | os.PathLike | ImageSource, out: str | os.PathLike, *,
                 score: str | None = None, quantile: float | None = None, threshold: float | None = None,
                 resize: bool = False, batch_size: int = 1024, limit: int | None = None, progress: bool = True,
                 data_dir: str | None = None) -> ScoreResult:
    """Score every image of ``source`` with the detector of ``run`` into the CSV file ``out``: columns index,
    [name, label, class,] score, anomaly (1 when the score is above the threshold)."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a .csv file name with -o")
    write_target(out)  # a dangling link, a link loop, a path under a file: refused before the work
    check_apart(out, (source,))
    model = load(run)
    model.detector = run_detector(Run.open(run), model.model, quantile, score)
    det = model.detector
    cut = det.threshold if threshold is None else float(threshold)
    src = open_source(model, source, resize, data_dir)  # data:SPLIT: the run's own split
    n = _count(src.n, limit)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["index", *_meta_columns(src), "score", "anomaly"])
    flagged = 0
    with _bar(n, "score", progress) as bar:
        for start, images in src.batches(batch_size, n):
            s = model.anomaly_score(to_pixels(images, src.label, start, model.image_shape))
            for j, value in enumerate(s):
                flag = bool(value > cut)
                flagged += flag
                writer.writerow([start + j, *_meta(src, start + j), f"{value:.6g}", int(flag)])
            bar.update(len(images))
    atomic_write_text(out, buf.getvalue())
    return ScoreResult(n=n, flagged=flagged, path=out, score=f"{det.score} ({SCORE_LABELS[det.score]})",
                       threshold=cut, quantile=det.quantile)


# ------------------------------------------------------------------------------------------ denoise
def denoise_to_pngs(run: str | os.PathLike | TrainedModel, source: str | os.PathLike | ImageSource,
                    out_dir: str | os.PathLike, *, add_noise: str | None = None, seed: int = 0, resize: bool = False,
                    batch_size: int = 1024, limit: int | None = None, progress: bool = True,
                    data_dir: str | None = None, force: bool = False, scale: int = 1) -> DenoiseResult:
    """Write the model's output for every image of ``source`` into ``out_dir``: ``input | denoised`` PNGs, or
    with ``add_noise`` (e.g. ``gaussian:0.3``: the inputs are clean and corrupted here, seeded)
    ``noisy | denoised | clean`` PNGs with the SSIM of the denoised image against the clean one; and index.csv."""
    stage = StagedDir(out_dir, force, inputs=(source,))  # refuses a bad -o before the work
    model = run if isinstance(run, TrainedModel) else load(run)
    spec = NoiseSpec.parse(add_noise)
    src = open_source(model, source, resize, data_dir)  # data:SPLIT: the run's own split
    n = _count(src.n, limit)
    width = max(5, len(str(max(n - 1, 0))))
    buf = io.StringIO()
    index = csv.writer(buf)
    index.writerow(["index", "file", *(["ssim"] if spec else []), *_meta_columns(src)])
    total = 0.0
    with stage, _bar(n, "denoise", progress) as bar:
        for b, (start, images) in enumerate(src.batches(batch_size, n)):
            clean = to_pixels(images, src.label, start, model.image_shape)
            x = spec.apply(clean, generator_for(seed, TEST_STREAM, 0, b)) if spec else clean
            y = model.decode_batch(model.encode_batch(x))
            tiles = [x, y, clean] if spec else [x, y]
            ssim = ssim_per_image(y.double(), clean.double()).numpy() if spec else None
            strips = _strip(tiles)
            for j, img in enumerate(strips):
                i = start + j
                name = src.names[i] if src.names else None
                tag = f"_ssim{ssim[j]:.4f}" if ssim is not None else ""
                file = f"{i:0{width}d}{_stem(name)}{tag}.png"
                stage.write(file, image_bytes(img, scale))
                index.writerow([i, file, *([f"{ssim[j]:.6f}"] if ssim is not None else []), *_meta(src, i)])
            if ssim is not None:
                total += float(ssim.sum())
            bar.update(len(images))
        stage.write("index.csv", buf.getvalue().encode("utf-8"))
        path = stage.commit()
    return DenoiseResult(n=n, path=path, mean_ssim=total / n if spec and n else None)


def _strip(tiles: list[torch.Tensor]) -> np.ndarray:
    """(b, H, kW + k - 1[, C]) uint8: the tiles of each image side by side, grey columns between them."""
    return side_by_side(tiles, SEPARATOR)
