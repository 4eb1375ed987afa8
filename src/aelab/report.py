"""A run folder -> its figures (RUN/figures/*.png) and one self-contained page (RUN/report.html).

``write_report(run)`` rebuilds everything from the run folder alone: the config, the best checkpoint, the
training history, metrics.json and the stored PCA baseline (fitted again, in memory, when absent), plus the
run's own test split. It checks the folder first and raises ``RunError`` (one line: what is missing and the
command that makes it) before writing anything. Figures are all drawn in memory before the first file is
written; every file is written to a temporary name and renamed, so report.html is never half-written.
The page embeds its images as base64 data URIs and loads nothing from the network.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aelab.config import RunConfig
from aelab.errors import RunError
from aelab.models import Autoencoder, PCAModel, inference_batch, inference_copy
from aelab.runs import Run, atomic_write_bytes, atomic_write_text

SCATTER_SAMPLE = 5000  # test images in the latent scatter (PCA map, or the 2-D latent itself)
TSNE_SAMPLE = 2000     # of those, the ones t-SNE / UMAP maps (t-SNE costs ~10-30 s for 2,000 on 2 cores)
TSNE_ITERATIONS = 500
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr")
METRIC_KEYS = ("ssim", "ssim7", "psnr", "mse", "bce", "knn5", "trustworthiness")


@dataclass
class FigureOut:
    """One figure of the report: its file name, heading, one-line caption and PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes
    size: tuple[int, int] = (0, 0)

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


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
    """The test split seen through the model and through PCA (arrays in [0, 1], images (n, 28, 28))."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    codes: np.ndarray
    ae: np.ndarray
    pca: np.ndarray
    ssim_ae: np.ndarray
    ssim_pca: np.ndarray
    decode: Callable[[np.ndarray], np.ndarray] = field(repr=False)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Use the run's ``threads`` setting (torch, BLAS and OpenMP pools) while the report is computed."""
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- checks
def check_run(run: Run) -> RunInputs:
    """Read and check everything the report needs; ``RunError`` with the fix when something is missing."""
    from aelab.evaluate import METRICS_FORMAT

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
    fast = inference_copy(model)
    device = next(model.parameters()).device

    def decode(codes: np.ndarray, batch: int = inference_batch(device)) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(codes), batch):
                z = torch.as_tensor(np.asarray(codes[i:i + batch], dtype=np.float32), device=device)
                out.append(torch.sigmoid(fast.decode(z)).float().cpu().reshape(-1, 28, 28))
        return torch.cat(out).numpy() if out else np.empty((0, 28, 28), np.float32)
    return decode


def _ssim(recon: np.ndarray, target: np.ndarray, batch: int = 2000) -> np.ndarray:
    from aelab.metrics import ssim_per_image

    out = []
    for i in range(0, len(recon), batch):
        r = torch.from_numpy(recon[i:i + batch]).unsqueeze(1)
        t = torch.from_numpy(target[i:i + batch]).unsqueeze(1)
        out.append(ssim_per_image(r, t).numpy())
    return np.concatenate(out)


def gather_views(inputs: RunInputs) -> SplitViews:
    """The run's test split through the model (codes, reconstructions) and through PCA, with per-image SSIM."""
    from aelab.data import load_dataset
    from aelab.evaluate import encode_all, fit_pca

    cfg = inputs.cfg
    bundle = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                          classes=cfg.classes, train_limit=cfg.train_limit)
    expected = inputs.metrics["split"].get("test")
    if expected is not None and expected != len(bundle.test):
        raise RunError(f"{inputs.run.metrics} was made on {expected} test images but the data now give "
                       f"{len(bundle.test)}; rebuild it with 'aelab evaluate {inputs.run.path}'")
    pca: PCAModel | None = inputs.run.load_pca()
    if pca is None or pca.latent != cfg.latent:
        pca = fit_pca(bundle, cfg.latent)
    images = bundle.test.images.numpy().astype(np.float32) / 255.0
    decode = _decoder(inputs.model)
    codes = encode_all(inputs.model, bundle.test.images).numpy()
    ae = decode(codes)
    pca_recon = pca.reconstruct(bundle.test.images).numpy().reshape(-1, 28, 28)
    return SplitViews(images=images, labels=bundle.test.labels.numpy(), class_names=bundle.classes, codes=codes,
                     ae=ae, pca=pca_recon, ssim_ae=_ssim(ae, images), ssim_pca=_ssim(pca_recon, images),
                     decode=decode)


# ------------------------------------------------------------------------------------------- figures
def make_figures(inputs: RunInputs, views: SplitViews, tsne_sample: int = TSNE_SAMPLE,
                 scatter_sample: int = SCATTER_SAMPLE) -> list[FigureOut]:
    """Every figure of the report, drawn in memory, in the order the page shows them."""
    from aelab import figures as F

    cfg, m = inputs.cfg, inputs.metrics
    rng = np.random.default_rng(cfg.seed)
    names = views.class_names
    n, d = views.codes.shape
    label_names = [names[int(c)] for c in views.labels]
    run_tag = f"{cfg.dataset}, {cfg.model}, latent {d}"
    out: list[FigureOut] = []

    def add(name: str, title: str, caption: str, fig: Any) -> None:
        png = F.png_bytes(fig)
        with Image.open(io.BytesIO(png)) as im:
            size = im.size
        out.append(FigureOut(name, title, caption, png, size))

    # Latent space.
    sample = np.sort(rng.permutation(n)[:min(scatter_sample, n)])
    add("latent.png", "Latent space", *_latent_figure(views, sample, rng, tsne_sample, run_tag))

    # Reconstructions: random, best, worst, per class.
    def recon(idx: np.ndarray, title: str) -> Any:
        return F.reconstructions(views.images[idx], views.ae[idx], views.pca[idx], views.ssim_ae[idx],
                                 views.ssim_pca[idx], [label_names[i] for i in idx], title)

    k = min(10, n)
    idx = np.sort(rng.permutation(n)[:k])
    add("recon_random.png", "Reconstructions: a random set",
        f"{k} test images drawn at random (seed {cfg.seed}), above the autoencoder's and PCA's reconstructions "
        f"with their SSIM.", recon(idx, f"Random test images and their reconstructions ({run_tag})"))
    order = np.argsort(-views.ssim_ae, kind="stable")
    add("recon_best.png", "Reconstructions: the best",
        f"The {k} test images the autoencoder reconstructs best by SSIM (of {n}), beside PCA's reconstruction.",
        recon(order[:k], f"Best {k} reconstructions by autoencoder SSIM ({run_tag})"))
    add("recon_worst.png", "Reconstructions: the worst",
        f"The {k} test images the autoencoder reconstructs worst by SSIM (of {n}), beside PCA's reconstruction.",
        recon(order[::-1][:k], f"Worst {k} reconstructions by autoencoder SSIM ({run_tag})"))
    add("recon_by_class.png", "Reconstructions by class", *_by_class_figure(views, rng, run_tag))

    # Original / latent / reconstruction triplets, one image from each of up to five classes.
    present = [int(c) for c in np.unique(views.labels)]
    picks = np.array([rng.choice(np.flatnonzero(views.labels == c)) for c in present[:5]])
    if len(picks) < 5:
        rest = np.setdiff1d(np.arange(n), picks)
        picks = np.concatenate([picks, rng.choice(rest, size=min(5 - len(picks), len(rest)), replace=False)])
    add("triplets.png", "Original, latent code, reconstruction",
        f"Test images, the {d} numbers the encoder turns each into (one bar each), and what "
        f"the decoder makes of them, with the reconstruction's SSIM.",
        F.triplets(views.images[picks], views.codes[picks], views.ae[picks], views.ssim_ae[picks],
                   [label_names[i] for i in picks], f"What the encoder keeps ({run_tag})"))

    # Training curves.
    r = m["run"]
    stop = {"early-stopping": "stopped early", "time-budget": "stopped by the time budget",
            "completed": "ran every planned epoch"}.get(str(r.get("stopped")), str(r.get("stopped") or "?"))
    add("training.png", "Training curves",
        f"Loss per epoch ({cfg.loss}) on the training and validation images, and the learning rate; the best "
        f"validation epoch ({r.get('best_epoch')}) is the checkpoint evaluated; training {stop}.",
        F.training_curves(inputs.history, r.get("best_epoch"), r.get("stopped"), cfg.loss,
                          f"Training of {inputs.run.path.name}"))

    # Decoded manifold and interpolation.
    add("manifold.png", "Decoded manifold", *_manifold_figure(views, run_tag))
    add("interpolation.png", "Interpolation in latent space", *_interpolation_figure(views, rng, run_tag))

    # Per-class quality from metrics.json.
    classes = list(m["autoencoder"]["per_class"])
    ae_ssim = [m["autoencoder"]["per_class"][c]["ssim"] for c in classes]
    pca_ssim = [m["pca"]["per_class"].get(c, {}).get("ssim", math.nan) for c in classes]
    add("per_class_ssim.png", "SSIM per class",
        f"Mean test SSIM per class, the autoencoder beside PCA with {d} components (from metrics.json); dashed "
        f"lines: the means over all test images.",
        F.per_class_quality(classes, ae_ssim, pca_ssim, m["autoencoder"]["overall"]["ssim"],
                            m["pca"]["overall"]["ssim"], f"SSIM per class, autoencoder vs PCA ({run_tag})"))
    return out


def _latent_figure(views: SplitViews, sample: np.ndarray, rng: np.random.Generator, tsne_sample: int,
                   run_tag: str) -> tuple[str, Any]:
    from sklearn.decomposition import PCA

    from aelab import figures as F

    codes, labels = views.codes[sample], views.labels[sample]
    d = codes.shape[1]
    title = f"Test images in latent space ({run_tag})"
    if d == 2:
        panels = [("the 2-D latent itself", codes, labels, "latent z₁", "latent z₂")]
        return (f"The 2-D codes of {len(sample):,} test images drawn at random, coloured by class.",
                F.latent_scatter(panels, views.class_names, title))
    if d == 1:
        jitter = labels + rng.uniform(-0.3, 0.3, len(labels))
        panels = [("the 1-D latent, one row per class", np.c_[codes[:, 0], jitter], labels, "latent z",
                   "class index (rows jittered)")]
        return (f"The 1-D codes of {len(sample):,} test images drawn at random, one jittered row per class.",
                F.latent_scatter(panels, views.class_names, title))
    pca = PCA(n_components=2, random_state=0).fit(codes)
    share = pca.explained_variance_ratio_ * 100
    panels = [(f"PCA of the {d}-D codes", pca.transform(codes), labels,
               f"principal direction 1 ({share[0]:.0f}% of variance)",
               f"principal direction 2 ({share[1]:.0f}% of variance)")]
    sub = np.sort(rng.permutation(len(sample))[:min(tsne_sample, len(sample))])
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(sub) - 1) / 3.5)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=TSNE_ITERATIONS, random_state=0)
    panels.append((f"t-SNE of {len(sub):,} of them", tsne.fit_transform(codes[sub]), labels[sub], "t-SNE 1",
                   "t-SNE 2"))
    extra = ""
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        umap = None
    if umap is not None:
        emb = umap.UMAP(n_components=2, random_state=0).fit_transform(codes[sub])
        panels.append((f"UMAP of the same {len(sub):,}", emb, labels[sub], "UMAP 1", "UMAP 2"))
        extra = " and UMAP"
    caption = (f"The {d}-D codes of {len(sample):,} random test images projected on their first two principal "
               f"directions; t-SNE{extra} on {len(sub):,} of them (a subsample, to keep t-SNE quick; "
               f"perplexity {perplexity:.0f}, seed 0).")
    return caption, F.latent_scatter(panels, views.class_names, title)


def _by_class_figure(views: SplitViews, rng: np.random.Generator, run_tag: str) -> tuple[str, Any]:
    from aelab import figures as F

    present = [int(c) for c in np.unique(views.labels)]
    k = max(1, min(3, min(int((views.labels == c).sum()) for c in present)))
    idx = np.array([np.sort(rng.choice(np.flatnonzero(views.labels == c), size=k, replace=False))
                    for c in present])
    fig = F.reconstructions_by_class(views.images[idx], views.ae[idx], views.pca[idx], views.ssim_ae[idx],
                                     views.ssim_pca[idx], [views.class_names[c] for c in present],
                                     f"Reconstructions by class ({run_tag})")
    return (f"{k} random test images per class (one row each): original, autoencoder (AE) and PCA, with the "
            f"SSIM of each reconstruction.", fig)


def _grid_values(scores: np.ndarray, steps: int) -> np.ndarray:
    return np.quantile(scores, np.linspace(0.02, 0.98, steps))


def _manifold_figure(views: SplitViews, run_tag: str, steps: int = 15) -> tuple[str, Any]:
    from sklearn.decomposition import PCA

    from aelab import figures as F

    codes = views.codes
    d = codes.shape[1]
    title = f"Decoded manifold ({run_tag})"
    if d == 1:
        xs = _grid_values(codes[:, 0], steps)
        grid = views.decode(xs[:, None]).reshape(1, steps, 28, 28)
        caption = (f"The decoder's images for {steps} values of the 1-D latent, from the 2% to the 98% quantile "
                   f"of the test codes.")
        return caption, F.decoded_manifold(grid, xs, np.array([0.0]), "latent z", "", title)
    if d == 2:
        xs, ys = _grid_values(codes[:, 0], steps), _grid_values(codes[:, 1], steps)
        zz = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)   # row i: y = ys[i]
        grid = views.decode(zz).reshape(steps, steps, 28, 28)
        caption = (f"The decoder's images on a {steps}×{steps} grid spanning the 2% to 98% quantiles of the test "
                   f"codes in each latent dimension (grid values are quantiles, not evenly spaced).")
        return caption, F.decoded_manifold(grid, xs, ys, "latent z₁ (test-code quantiles)",
                                           "latent z₂ (test-code quantiles)", title)
    pca = PCA(n_components=2, random_state=0).fit(codes)
    scores = pca.transform(codes)
    share = pca.explained_variance_ratio_ * 100
    xs, ys = _grid_values(scores[:, 0], steps), _grid_values(scores[:, 1], steps)
    zz = pca.inverse_transform(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2))
    grid = views.decode(zz).reshape(steps, steps, 28, 28)
    caption = (f"The decoder's images on a {steps}×{steps} grid in the plane of the first two principal "
               f"directions of the {d}-D test codes (through their mean), spanning the 2% to 98% quantiles.")
    return caption, F.decoded_manifold(grid, xs, ys, f"principal direction 1 ({share[0]:.0f}% of variance)",
                                       f"principal direction 2 ({share[1]:.0f}% of variance)", title)


def _interpolation_figure(views: SplitViews, rng: np.random.Generator, run_tag: str, steps: int = 9
                          ) -> tuple[str, Any]:
    from aelab import figures as F

    present = [int(c) for c in np.unique(views.labels)]
    if len(present) >= 2:
        a, b = rng.choice(present, size=2, replace=False)
    else:
        a = b = present[0]
    i = int(rng.choice(np.flatnonzero(views.labels == a)))
    j = int(rng.choice(np.setdiff1d(np.flatnonzero(views.labels == b), [i])))
    t = np.linspace(0.0, 1.0, steps)
    line = (1 - t)[:, None] * views.codes[i] + t[:, None] * views.codes[j]
    decoded = views.decode(line)
    blended = (1 - t)[:, None, None] * views.images[i] + t[:, None, None] * views.images[j]
    na, nb = views.class_names[int(a)], views.class_names[int(b)]
    fig = F.interpolation(decoded, blended, t, views.images[i], views.images[j], na, nb,
                          f"Interpolation from {na} to {nb} ({run_tag})")
    caption = (f"Top: the decoder's images along the straight line between the codes of two test images ({na} "
               f"and {nb}, originals at the ends); bottom: the same two images simply blended pixel by pixel.")
    return caption, fig


# -------------------------------------------------------------------------------------------- the page
def _fmt(key: str, value: Any) -> str:
    from aelab.evaluate import COLUMNS

    fmt = {k: f for k, _, f in COLUMNS}.get(key, "{:.4f}")
    try:
        return fmt.format(float(value)) if value is not None and math.isfinite(float(value)) else "–"
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "unknown"
    s = float(seconds)
    return f"{s:.1f} s" if s < 90 else f"{s:.0f} s ({s / 60:.1f} min)"


def page_context(inputs: RunInputs, figures: list[FigureOut]) -> dict[str, Any]:
    """Everything the template shows, as plain strings and lists."""
    import aelab
    from aelab.evaluate import COLUMNS

    cfg, m = inputs.cfg, inputs.metrics
    ae, pca = m["autoencoder"], m["pca"]
    higher_better = {"ssim", "ssim7", "psnr", "knn5", "trustworthiness"}
    overall = []
    for key, label, _ in COLUMNS:
        a, p = ae["overall"].get(key), pca["overall"].get(key)
        better = None
        if a is not None and p is not None and a != p:
            better = "autoencoder" if (a > p) == (key in higher_better) else "pca"
        overall.append({"key": key, "label": label, "ae": _fmt(key, a), "pca": _fmt(key, p),
                        "ae_raw": a, "pca_raw": p, "better": better,
                        "hint": "higher is better" if key in higher_better else "lower is better"})
    per_class = []
    for name, row in ae["per_class"].items():
        prow = pca["per_class"].get(name, {})
        per_class.append({"name": name, "n": row.get("n", ""),
                          "cells": [(key, _fmt(key, row.get(key)), _fmt(key, prow.get(key)), row.get(key),
                                     prow.get(key)) for key in ("ssim", "psnr", "mse")]})
    r = m["run"]
    hist = inputs.history
    speeds = [h["images_per_s"] for h in hist if math.isfinite(h.get("images_per_s", math.nan))]
    best = r.get("best_epoch")
    best_row = next((h for h in hist if h["epoch"] == best), None)
    return {
        "title": f"aelab report: {inputs.run.path.name}",
        "run_name": inputs.run.path.name,
        "headline": {"dataset": cfg.dataset, "model": cfg.model, "latent": cfg.latent,
                     "ae_ssim": _fmt("ssim", ae["overall"]["ssim"]), "pca_ssim": _fmt("ssim", pca["overall"]["ssim"]),
                     "ae_psnr": _fmt("psnr", ae["overall"]["psnr"]), "pca_psnr": _fmt("psnr", pca["overall"]["psnr"])},
        "config": [(k, "—" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v)))
                   for k, v in cfg.to_dict().items()],
        "data": [("data set", m["split"].get("source") and f"{cfg.dataset} (from {m['split']['source']})"
                  or cfg.dataset),
                 ("classes", ", ".join(m["split"].get("classes") or [])),
                 ("training images", f"{m['split'].get('train', 0):,}"),
                 ("validation images", f"{m['split'].get('val', 0):,} (seeded split, fraction {cfg.val_fraction})"),
                 ("test images", f"{m['split'].get('test', 0):,} (the official test split)")],
        "training": [("model", f"{cfg.model}, latent {cfg.latent}, {int(r.get('parameters') or 0):,} parameters"),
                     ("epochs", f"{r.get('epochs')} of {cfg.epochs} planned"),
                     ("best epoch", f"{best}" + (f" (validation loss {best_row['val_loss']:.5f})"
                                                 if best_row and math.isfinite(best_row["val_loss"]) else "")),
                     ("stopped", str(r.get("stopped") or "unknown")),
                     ("training time", _duration(r.get("train_seconds"))),
                     ("throughput", f"{np.mean(speeds):,.0f} images/s (mean over epochs)" if speeds else "unknown"),
                     ("arithmetic", {"bf16": "bf16 autocast (weights, optimizer and loss in fp32)",
                                     "fp32": "fp32"}.get(r.get("precision") or "", "not recorded")),
                     ("evaluation time", _duration(m.get("eval_seconds")))],
        "overall": overall,
        "per_class": per_class,
        "ssim_definition": m.get("ssim_definition", ""),
        "figures": [{"id": f.name.removesuffix(".png"), "title": f.title, "caption": f.caption,
                     "src": f.data_uri(), "file": f"figures/{f.name}", "width": f.size[0], "height": f.size[1]}
                    for f in figures],
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "version": aelab.__version__,
    }


def render_page(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("aelab", "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html").render(**context)


def write_report(run: Run, tsne_sample: int = TSNE_SAMPLE, scatter_sample: int = SCATTER_SAMPLE) -> Path:
    """Make every figure into RUN/figures/ and write RUN/report.html; returns the report's path.

    Checks the run folder first (``RunError`` naming what is missing, nothing written); draws all figures in
    memory; then writes each file atomically, report.html last.
    """
    inputs = check_run(run)
    with _threads(inputs.cfg.threads):
        views = gather_views(inputs)
        figures = make_figures(inputs, views, tsne_sample=tsne_sample, scatter_sample=scatter_sample)
    html = render_page(page_context(inputs, figures))
    for f in figures:
        atomic_write_bytes(inputs.run.figures / f.name, f.png)
    return atomic_write_text(inputs.run.report, html)
