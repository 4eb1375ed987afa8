"""What a report is made of: the run folder read and checked, and the test split seen through the model and PCA.

``check_run`` reads and checks everything before anything is drawn or written (``RunError`` naming what is
missing and the command that makes it); ``gather_views`` passes the test split through the model and PCA, or
takes those passes from the evaluation that just ran (``evaluation.TestPasses``) instead of doing them again.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aelab.config import RunConfig
from aelab.data import DataBundle, display, load_dataset
from aelab.errors import RunError
from aelab.evaluation import METRICS_FORMAT, TestPasses, encode_all, fit_pca
from aelab.evaluation.metrics import ssim_per_image
from aelab.evaluation.passes import BatchedInference
from aelab.models import Autoencoder, PCAModel
from aelab.runs import Run

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr")
METRIC_KEYS = ("ssim", "ssim7", "psnr", "mse", "bce", "knn5", "trustworthiness")


@dataclass
class RunInputs:
    """What the report is built from, read and checked before anything is written."""

    run: Run
    cfg: RunConfig
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    model: Autoencoder


@dataclass
class SplitViews:
    """The test split seen through the model and through PCA (arrays in [0, 1], images (n, H, W) grey or
    (n, H, W, C) colour: ``data.display``)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    codes: np.ndarray
    ae: np.ndarray
    pca: np.ndarray
    ssim_ae: np.ndarray
    ssim_pca: np.ndarray
    decode: Callable[[np.ndarray], np.ndarray] = field(repr=False)

# ------------------------------------------------------------------------------------------- checks
def check_run(run: Run) -> RunInputs:
    """Read and check everything the report needs; ``RunError`` with the fix when something is missing."""
    run = Run.open(run.path)
    cfg = run.config()
    if not (run.best.is_file() or run.last.is_file()):
        raise RunError(f"{run.path} has no checkpoint (best.safetensors); train it with 'aelab train' or resume "
                       f"it with 'aelab train --resume {run.path}'")
    history = read_history(run)
    metrics = run.load_metrics()
    fmt = metrics.get("format") if isinstance(metrics, dict) else None
    if fmt != METRICS_FORMAT:
        raise RunError(f"{run.metrics} is in an older format ({fmt!r}, this aelab reads {METRICS_FORMAT}); "
                       f"rebuild it with 'aelab evaluate {run.path}'")
    missing = _missing_metric_keys(metrics)
    if missing:
        raise RunError(f"{run.metrics} lacks {missing}; rebuild it with 'aelab evaluate {run.path}'")
    if metrics["run"].get("latent") != cfg.latent or metrics["run"].get("model") != cfg.model:
        raise RunError(f"{run.metrics} describes another model ({metrics['run'].get('model')}, latent "
                       f"{metrics['run'].get('latent')}) than config.yaml; rebuild it with 'aelab evaluate "
                       f"{run.path}'")
    model = run.load_model("best")
    return RunInputs(run=run, cfg=cfg, metrics=metrics, history=history, model=model)


def _missing_metric_keys(metrics: dict[str, Any]) -> str | None:
    for part in ("run", "split", "autoencoder", "pca"):
        if not isinstance(metrics.get(part), dict):
            return f"the '{part}' section"
    for part in ("autoencoder", "pca"):
        overall = metrics[part].get("overall", {})
        for key in METRIC_KEYS:
            if key not in overall:
                return f"{part}.overall.{key}"
        if not metrics[part].get("per_class"):
            return f"{part}.per_class"
    return None


def read_history(run: Run) -> list[dict[str, Any]]:
    """history.csv as a list of rows with numbers; ``RunError`` when missing or of another format."""
    if not run.history.is_file():
        raise RunError(f"{run.path} has no history.csv (no finished epoch); finish training with 'aelab train "
                       f"--resume {run.path}'")
    with run.history.open(newline="") as fh:
        reader = csv.DictReader(fh)
        lacking = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or [])]
        if lacking:
            raise RunError(f"{run.history} is from another version of aelab (no column {lacking[0]!r}); retrain "
                           f"the run with this version ('aelab train')")
        rows = []
        for row in reader:
            try:
                rows.append({"epoch": int(row["epoch"]), "train_loss": _num(row["train_loss"]),
                             "val_loss": _num(row["val_loss"]), "lr": _num(row["lr"]),
                             "seconds": _num(row.get("seconds")), "images_per_s": _num(row.get("images_per_s")),
                             "best": str(row.get("best", "")).lower() == "true"})
            except (TypeError, ValueError):
                raise RunError(f"{run.history} is damaged (line {reader.line_num}); retrain the run") from None
    if not rows:
        raise RunError(f"{run.history} holds no epoch; finish training with 'aelab train --resume {run.path}'")
    return rows


def _num(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)

# -------------------------------------------------------------------------------------- the test views
def _decoder(model: Autoencoder) -> Callable[[np.ndarray], np.ndarray]:
    run = BatchedInference(model)
    empty = display(np.empty((0, *model.image_shape), np.float32))

    def decode(codes: np.ndarray) -> np.ndarray:
        out = run.map(torch.as_tensor(np.asarray(codes, dtype=np.float32)),
                      lambda m, z: torch.sigmoid(m.decode(z)).float().cpu())
        return display(torch.cat(out)) if out else empty
    return decode


def _nchw(images: np.ndarray) -> torch.Tensor:
    """Display-layout images (n, H, W) or (n, H, W, C) -> (n, C, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)


def _ssim(recon: np.ndarray, target: np.ndarray, batch: int = 2000) -> np.ndarray:
    out = []
    for i in range(0, len(recon), batch):
        out.append(ssim_per_image(_nchw(recon[i:i + batch]), _nchw(target[i:i + batch])).numpy())
    return np.concatenate(out)


def gather_views(inputs: RunInputs, bundle: DataBundle | None = None, passes: TestPasses | None = None
                 ) -> SplitViews:
    """The run's test split through the model (codes, reconstructions) and through PCA, with per-image SSIM.

    ``bundle``: the run's data when already in memory; ``passes``: the evaluation's passes over that test split
    (the same model and PCA), used as they are instead of computing them again.
    """
    cfg = inputs.cfg
    bundle = bundle or load_dataset(cfg.dataset, **cfg.data_kwargs())
    expected = inputs.metrics["split"].get("test")
    if expected is not None and expected != len(bundle.test):
        raise RunError(f"{inputs.run.metrics} was made on {expected} test images but the data now give "
                       f"{len(bundle.test)}; rebuild it with 'aelab evaluate {inputs.run.path}'")
    images = display(bundle.test.images.numpy().astype(np.float32) / 255.0)
    decode = _decoder(inputs.model)
    labels, classes = bundle.test.labels.numpy(), bundle.classes
    if passes is not None and passes.recon is not None and len(passes.codes) == len(images):
        return SplitViews(images=images, labels=labels, class_names=classes, codes=passes.codes, ae=passes.recon,
                          pca=passes.pca_recon, ssim_ae=passes.ssim, ssim_pca=passes.ssim_pca, decode=decode)
    pca: PCAModel | None = inputs.run.load_pca()
    if pca is None or pca.latent != cfg.latent or pca.shape != bundle.shape:
        pca = fit_pca(bundle, cfg.latent)
    codes = encode_all(inputs.model, bundle.test.images).numpy()
    ae = decode(codes)
    pca_recon = display(pca.reconstruct(bundle.test.images))
    return SplitViews(images=images, labels=labels, class_names=classes, codes=codes, ae=ae, pca=pca_recon,
                      ssim_ae=_ssim(ae, images), ssim_pca=_ssim(pca_recon, images), decode=decode)
