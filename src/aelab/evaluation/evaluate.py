"""A run folder -> metrics.json: test-set reconstruction metrics and latent quality, beside PCA.

The PCA baseline has the run's latent size and is fitted on the run's own training split; it is stored in
the run (``Run.pca``) so that reports and comparisons reuse it. Results whose inputs do not change between two
evaluations of a run (the kNN sample's codes, PCA's figures) are kept in its evaluation cache (``Run.eval_cache``,
``evaluation.cache``).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aelab.checkpoints import load_checkpoint, tensors_digest
from aelab.data import DataBundle, display, load_dataset, shape_text
from aelab.data.noise import NoiseSpec
from aelab.errors import RunError
from aelab.evaluation.cache import EvalCache, weights_digest
from aelab.evaluation.denoise import evaluate_denoising
from aelab.evaluation.metrics import (
    knn_accuracy,
    latent_trustworthiness,
    ssim_window,
    summarize,
)
from aelab.evaluation.passes import (
    PixelRows,
    encode_all,
    fit_pca,
    images_digest,
    keeps_reconstructions,
    pca_codes,
    reconstruction_pass,
    subset,
)
from aelab.evaluation.vae import IWAE_IMAGES, IWAE_K, plain_section, vae_metrics
from aelab.files import write_json
from aelab.models import VAE, Autoencoder, PCAModel, count_parameters
from aelab.runs import Run

METRICS_FORMAT = "aelab-metrics-1"
SSIM_DEFINITION = ("SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1, valid region, "
                   "mean over images; SSIM-7: 7x7 uniform window, sample covariance")


def ssim_definition(shape: tuple[int, int, int]) -> str:
    """SSIM_DEFINITION, with what colour and small images change (metrics.ssim_window, docs/own-images.md)."""
    c, h, w = shape
    notes = []
    if c > 1:
        notes.append(f"colour: SSIM of each of the {c} channels, averaged over them")
    if min(h, w) < 11:
        notes.append(f"{h}x{w} images: windows cut to the largest odd size that fits (Gaussian "
                     f"{ssim_window('gaussian', min(h, w))[0].numel()} taps, uniform "
                     f"{ssim_window('uniform7', min(h, w))[0].numel()})")
    return SSIM_DEFINITION + "".join(f"; {n}" for n in notes)


COLUMNS = (("ssim", "SSIM", "{:.4f}"), ("ssim7", "SSIM-7", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}"),
           ("mse", "MSE", "{:.5f}"), ("bce", "BCE", "{:.4f}"), ("knn5", "kNN-5 acc", "{:.4f}"),
           ("trustworthiness", "trust.", "{:.4f}"))


# kNN-5 is fitted on the codes of a fixed, seeded sample of this many training images (all of them when there are
# fewer), not on all 54,000: encoding the whole training split was 4/5 of the network work of an evaluation
# (docs/evaluation.md gives the measured time and the accuracy against the full fit).
KNN_TRAIN_SAMPLE = 10_000


def knn_train_indices(n: int, seed: int, sample: int = KNN_TRAIN_SAMPLE) -> np.ndarray:
    """The training images kNN-5 is fitted on: a seeded sample of ``sample`` of ``n`` (sorted), or all."""
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed + 5).permutation(n)[:sample])


def _latent_quality(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray, bundle: DataBundle,
                    seed: int) -> dict[str, float]:
    test_pixels = PixelRows(bundle.test.images)  # read for the images trustworthiness samples only
    return {"knn5": knn_accuracy(train_codes, train_labels, test_codes, bundle.test.labels.numpy()),
            "trustworthiness": latent_trustworthiness(test_pixels, test_codes, seed=seed)}


@dataclass
class TestPasses:
    """The test split as evaluation saw it, for the report to reuse instead of a second pass over the data."""

    codes: np.ndarray      # (n, latent) float32, the autoencoder's codes
    # (n, H, W) grey / (n, H, W, C) colour float32 in [0, 1], the autoencoder's and PCA's reconstructions; None
    # when a large test split's would take more than passes.KEEP_BYTES (the evaluation keeps only per-image values)
    recon: np.ndarray | None
    pca_recon: np.ndarray | None
    ssim: np.ndarray       # (n,) per-image SSIM (headline definition) of ``recon``
    ssim_pca: np.ndarray   # (n,) the same for ``pca_recon``
    pca: PCAModel


def evaluate_test(model: Autoencoder, bundle: DataBundle, pca: PCAModel, seed: int = 0,
                  cache: EvalCache | None = None) -> tuple[dict[str, Any], TestPasses]:
    """Test-set metrics of ``model`` and of ``pca``, overall and per class, and their latent quality; with the
    per-image results they were computed from. ``cache``: the run folder's results of earlier evaluations (the
    kNN sample's codes under these weights, PCA's metrics), used when their inputs are the same. The test images
    are read a chunk at a time (``passes.reconstruction_pass``): memory holds codes and per-image values, and the
    reconstructions only for a test split small enough (``passes.keeps_reconstructions``)."""
    cache = cache or EvalCache(None)
    labels = bundle.test.labels.numpy()
    out: dict[str, Any] = {}
    per_image: dict[str, dict[str, np.ndarray]] = {}
    keep = keeps_reconstructions(len(bundle.test), bundle.shape)
    ae = reconstruction_pass(model, bundle.test.images, keep=keep)
    knn = knn_train_indices(len(bundle.train), seed)
    knn_images, knn_labels = subset(bundle.train.images, knn), bundle.train.labels.numpy()[knn]
    inputs = {"knn_images": images_digest(knn_images, bundle.train.labels[knn]), "seed": seed,
              "classes": bundle.classes, "test": images_digest(bundle.test.images, bundle.test.labels)}

    ae_key = {"weights": weights_digest(model), "knn_images": inputs["knn_images"]}
    hit = cache.get("autoencoder_knn_codes", ae_key)
    train_codes = hit[0]["codes"] if hit else encode_all(model, knn_images)
    if not hit:
        cache.put("autoencoder_knn_codes", ae_key, {"codes": train_codes})
    per_image["autoencoder"] = ae.metrics
    out["autoencoder"] = summarize(per_image["autoencoder"], labels, bundle.classes)
    out["autoencoder"]["overall"].update(
        _latent_quality(train_codes.numpy(), knn_labels, ae.codes.numpy(), bundle, seed))

    pca_key = {"pca": tensors_digest(pca.state()), **inputs}
    hit = cache.get("pca_metrics", pca_key)
    pca_pass = reconstruction_pass(pca, bundle.test.images, keep=keep, metrics=not hit) if keep or not hit else None
    if hit:  # PCA's figures depend only on its fit and the data: read back, with the per-image SSIM the report needs
        out["pca"], per_image["pca"] = hit[1], {"ssim": hit[0]["ssim"].numpy()}
    else:
        assert pca_pass is not None
        per_image["pca"] = pca_pass.metrics
        out["pca"] = summarize(per_image["pca"], labels, bundle.classes)
        out["pca"]["overall"].update(_latent_quality(pca_codes(pca, knn_images), knn_labels,
                                                     pca_pass.codes.numpy(), bundle, seed))
        cache.put("pca_metrics", pca_key, {"ssim": torch.from_numpy(per_image["pca"]["ssim"])}, out["pca"])
    cache.save()
    passes = TestPasses(codes=ae.codes.numpy(), recon=display(ae.recon) if ae.recon is not None else None,
                        pca_recon=display(pca_pass.recon) if pca_pass and pca_pass.recon is not None else None,
                        ssim=per_image["autoencoder"]["ssim"], ssim_pca=per_image["pca"]["ssim"], pca=pca)
    return out, passes


def evaluate_model(model: Autoencoder, bundle: DataBundle, pca: PCAModel, seed: int = 0) -> dict[str, Any]:
    """Test-set metrics of ``model`` and of ``pca``, overall and per class, and their latent quality."""
    return evaluate_test(model, bundle, pca, seed)[0]


def evaluate_run(run: Run, bundle: DataBundle | None = None, model: Autoencoder | None = None,
                 iwae_k: int = IWAE_K, iwae_images: int = IWAE_IMAGES, plain: str | os.PathLike | None = None
                 ) -> dict[str, Any]:
    """Evaluate a trained run on its test split and write ``metrics.json``; returns the metrics.

    A VAE run also gets its ``vae`` section (``evaluation.vae``: ELBO, IWAE bound with ``iwae_k`` samples, KL per
    dimension, active units; the IWAE on ``iwae_images`` test images, 0: all) and, with ``plain`` (a plain
    autoencoder's run folder), that run's overall metrics to show beside it.
    """
    return evaluate_run_passes(run, bundle, model, iwae_k=iwae_k, iwae_images=iwae_images, plain=plain)[0]


def evaluate_run_passes(run: Run, bundle: DataBundle | None = None, model: Autoencoder | None = None,
                        iwae_k: int = IWAE_K, iwae_images: int = IWAE_IMAGES,
                        plain: str | os.PathLike | None = None) -> tuple[dict[str, Any], TestPasses]:
    """``evaluate_run``, also returning the per-image test passes (the report reuses them)."""
    with run.writing():
        return _evaluate_run(run, bundle, model, iwae_k, iwae_images, plain)


def _evaluate_run(run: Run, bundle: DataBundle | None, model: Autoencoder | None, iwae_k: int = IWAE_K,
                  iwae_images: int = IWAE_IMAGES, plain: str | os.PathLike | None = None
                  ) -> tuple[dict[str, Any], TestPasses]:
    cfg = run.config()
    model = model if model is not None else run.load_model("best")
    bundle = bundle or load_dataset(cfg.dataset, **cfg.data_kwargs())
    check_data(run, bundle, model)
    t0 = time.perf_counter()
    pca = run.load_pca()
    if pca is None or pca.latent != cfg.latent or pca.shape != bundle.shape:
        pca = fit_pca(bundle, cfg.latent)
        run.save_pca(pca)
    results, passes = evaluate_test(model, bundle, pca, seed=cfg.seed, cache=EvalCache(run.eval_cache))
    training = _training_summary(run)
    metrics = {
        "format": METRICS_FORMAT,
        "run": {"name": run.path.name, "dataset": cfg.dataset, "model": cfg.model, "latent": cfg.latent,
                "loss": cfg.objective(), "parameters": count_parameters(model), **training},
        "split": {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
                  "classes": [bundle.classes[int(c)] for c in np.unique(bundle.test.labels.numpy())],
                  "source": bundle.source, "knn_train": int(min(len(bundle.train), KNN_TRAIN_SAMPLE)),
                  "shape": list(bundle.shape), "fingerprint": bundle.fingerprint.get("content")},
        "ssim_definition": ssim_definition(bundle.shape),
        **results,
    }
    if isinstance(model, VAE):
        metrics["vae"] = vae_metrics(model, bundle.test.images, cfg.dataset, k=iwae_k, seed=cfg.seed,
                                     iwae_images=iwae_images)
    if plain is not None:
        metrics["plain_autoencoder"] = plain_section(plain, cfg, len(bundle.test))
    spec = NoiseSpec.parse(cfg.noise)
    if spec is not None:  # a denoising run: the noisy test set, beside three baselines (evaluation.denoise)
        metrics["denoising"] = evaluate_denoising(model, bundle, spec, pca, cfg.seed)[0]
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(run.metrics, metrics)
    return metrics, passes


class DataChangedWarning(UserWarning):
    """The run's data are not the images it was trained on (``data.json``'s fingerprint differs)."""


def check_data(run: Run, bundle: DataBundle, model: Autoencoder) -> None:
    """``RunError`` when the data no longer fit the model (another image shape); a ``DataChangedWarning`` when
    their content differs from what the run was trained on (``data.json``)."""
    if model.image_shape != bundle.shape:
        raise RunError(f"{bundle.name} now gives {shape_text(bundle.shape)} images but the model of {run.path} takes "
                       f"{shape_text(model.image_shape)}; restore the data it was trained on, or train a new run")
    record = run.load_data()
    trained = (record or {}).get("fingerprint", {}).get("content")
    now = bundle.fingerprint.get("content")
    if trained and now and trained != now:
        warnings.warn(f"the data of {run.path} changed since training ({bundle.source}: content fingerprint "
                      f"{now[:12]}, trained on {trained[:12]}); the metrics are of the data as they are now",
                      DataChangedWarning, stacklevel=3)


def _training_summary(run: Run) -> dict[str, Any]:
    """Epochs, best epoch, stop reason and training seconds from the last checkpoint, if any."""
    if not run.last.is_file():
        return {}
    _, meta = load_checkpoint(run.last)
    loop = meta.get("loop", {})
    return {"epochs": loop.get("epoch"), "best_epoch": loop.get("best_epoch"), "stopped": loop.get("stopped"),
            "train_seconds": round(float(loop.get("elapsed", 0.0)), 1), "precision": meta.get("precision")}


def format_table(metrics: dict[str, Any]) -> str:
    """The overall metrics, autoencoder beside PCA, and SSIM per class, as plain text."""
    ae, pca = metrics["autoencoder"], metrics["pca"]
    lines = [f"{'':<14}{'autoencoder':>13}{'PCA':>10}"]
    for key, label, fmt in COLUMNS:
        lines.append(f"{label:<14}{fmt.format(ae['overall'][key]):>13}{fmt.format(pca['overall'][key]):>10}")
    lines.append("")
    lines.append(f"{'SSIM per class':<14}{'autoencoder':>13}{'PCA':>10}")
    for cls, row in ae["per_class"].items():
        lines.append(f"{cls:<14}{row['ssim']:>13.4f}{pca['per_class'][cls]['ssim']:>10.4f}")
    return "\n".join(lines)
