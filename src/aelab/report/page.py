"""A run folder -> its figures (RUN/figures/*.png) and one self-contained page (RUN/report.html).

``write_report(run)`` rebuilds everything from the run folder alone: the config, the best checkpoint, the
training history, metrics.json and the stored PCA baseline (fitted again, in memory, when absent), plus the
run's own test split (or the data and test passes a training job already has in memory). It checks the folder
first and raises ``RunError`` (one line: what is missing and the command that makes it) before writing
anything. Figures are all drawn in memory before the first file is written; every file is written to a
temporary name and renamed, so report.html is never half-written. The page embeds its images as base64 data
URIs and loads nothing from the network.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from aelab._version import __version__
from aelab.data import DATASETS, DataBundle, shape_text
from aelab.device import thread_limits
from aelab.evaluation import COLUMNS, TestPasses
from aelab.files import atomic_write_bytes, atomic_write_text
from aelab.report.denoise import denoise_context
from aelab.report.inputs import RunInputs, check_run, gather_views
from aelab.report.run_figures import SCATTER_SAMPLE, TSNE_SAMPLE, FigureOut, make_figures
from aelab.report.vae import plain_context, vae_context
from aelab.runs import Run


# -------------------------------------------------------------------------------------------- the page
def _fmt(key: str, value: Any) -> str:
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
    cfg, m = inputs.cfg, inputs.metrics
    ae, pca = m["autoencoder"], m["pca"]
    higher_better = {"ssim", "ssim7", "psnr", "knn5", "trustworthiness"}
    plain = plain_context(m, [k for k, _, _ in COLUMNS])  # a plain autoencoder beside a VAE, when given
    overall = []
    for key, label, _ in COLUMNS:
        a, p = ae["overall"].get(key), pca["overall"].get(key)
        better = None
        if a is not None and p is not None and a != p:
            better = "autoencoder" if (a > p) == (key in higher_better) else "pca"
        overall.append({"key": key, "label": label, "ae": _fmt(key, a), "pca": _fmt(key, p),
                        "plain": _fmt(key, plain["values"].get(key)) if plain else "",
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
        "headline": {"dataset": cfg.dataset_name, "model": cfg.model, "latent": cfg.latent,
                     "ae_ssim": _fmt("ssim", ae["overall"]["ssim"]), "pca_ssim": _fmt("ssim", pca["overall"]["ssim"]),
                     "ae_psnr": _fmt("psnr", ae["overall"]["psnr"]), "pca_psnr": _fmt("psnr", pca["overall"]["psnr"])},
        "config": [(k, "—" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v)))
                   for k, v in cfg.to_dict().items()],
        "data": [("data set", m["split"].get("source") and f"{cfg.dataset} (from {m['split']['source']})"
                  or cfg.dataset),
                 *([("images", shape_text(m["split"]["shape"]))] if m["split"].get("shape") else []),
                 ("classes", ", ".join(m["split"].get("classes") or [])),
                 ("training images", f"{m['split'].get('train', 0):,}"),
                 ("validation images", f"{m['split'].get('val', 0):,} (seeded split, fraction {cfg.val_fraction})"),
                 ("test images", f"{m['split'].get('test', 0):,} "
                                 f"({'the official test split' if cfg.dataset in DATASETS else 'the test split'})")],
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
        "plain": plain,
        "vae": vae_context(m),
        "denoising": denoise_context(m),
        "per_class": per_class,
        "ssim_definition": m.get("ssim_definition", ""),
        "figures": [{"id": f.name.removesuffix(".png"), "title": f.title, "caption": f.caption,
                     "src": f.data_uri(), "file": f"figures/{f.name}", "width": f.size[0], "height": f.size[1]}
                    for f in figures],
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "version": __version__,
    }


def render_page(context: dict[str, Any]) -> str:
    env = Environment(loader=PackageLoader("aelab.report", "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html").render(**context)


def write_report(run: Run, tsne_sample: int = TSNE_SAMPLE, scatter_sample: int = SCATTER_SAMPLE,
                 bundle: DataBundle | None = None, passes: TestPasses | None = None) -> Path:
    """Make every figure into RUN/figures/ and write RUN/report.html; returns the report's path.

    Checks the run folder first (``RunError`` naming what is missing, nothing written); draws all figures in
    memory; then writes each file atomically, report.html last. ``bundle`` and ``passes``: the run's data and
    test passes when the caller has them in memory (a training job), so they are not loaded or computed again.
    """
    with run.writing():
        return _write_report(run, tsne_sample, scatter_sample, bundle, passes)


def _write_report(run: Run, tsne_sample: int, scatter_sample: int, bundle: DataBundle | None,
                  passes: TestPasses | None) -> Path:
    inputs = check_run(run)
    with thread_limits(inputs.cfg.threads):
        views = gather_views(inputs, bundle, passes)
        figures = make_figures(inputs, views, tsne_sample=tsne_sample, scatter_sample=scatter_sample)
    html = render_page(page_context(inputs, figures))
    for f in figures:
        atomic_write_bytes(inputs.run.figures / f.name, f.png)
    return atomic_write_text(inputs.run.report, html)
