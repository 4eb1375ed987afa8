"""A run folder -> metrics.json: test-set reconstruction metrics and latent quality, beside PCA.

The PCA baseline has the run's latent size and is fitted on the run's own training split; it is stored in
``pca.safetensors`` so that reports and comparisons reuse it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aelab.data import DataBundle, load_dataset, to_float
from aelab.metrics import knn_accuracy, latent_trustworthiness, reconstruction_metrics, summarize
from aelab.models import Autoencoder, PCAModel, count_parameters, inference_batch, inference_copy, is_convolutional
from aelab.runs import Run, write_json

METRICS_FORMAT = "aelab-metrics-1"
SSIM_DEFINITION = ("SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1, valid region, "
                   "mean over images; SSIM-7: 7x7 uniform window, sample covariance")
COLUMNS = (("ssim", "SSIM", "{:.4f}"), ("ssim7", "SSIM-7", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}"),
           ("mse", "MSE", "{:.5f}"), ("bce", "BCE", "{:.4f}"), ("knn5", "kNN-5 acc", "{:.4f}"),
           ("trustworthiness", "trust.", "{:.4f}"))


def _batched(model: Autoencoder, images: torch.Tensor, fn: Callable[[Autoencoder, torch.Tensor], Any],
             batch: int | None) -> list[Any]:
    """``fn(fast_model, x)`` over uint8 images (n, 28, 28) in batches, without gradients, on the fast inference
    copy of ``model`` (``models.inference_copy``: batch norm folded, channels-last); one result per batch."""
    fast = inference_copy(model)
    device = next(model.parameters()).device
    batch = batch or inference_batch(device)
    layout = torch.channels_last if is_convolutional(fast) else torch.contiguous_format
    with torch.inference_mode():
        return [fn(fast, to_float(images[i:i + batch]).to(device).contiguous(memory_format=layout))
                for i in range(0, len(images), batch)]


def encode_all(model: Autoencoder, images: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Latent codes (n, latent) of uint8 images (n, 28, 28), float32 on the CPU."""
    if len(images) == 0:
        return torch.empty(0, model.latent)
    return torch.cat(_batched(model, images, lambda m, x: m.encode(x).float().cpu(), batch))


def reconstruct_all(model: Autoencoder, images: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Reconstructed pixels (n, 1, 28, 28) in [0, 1] of uint8 images (n, 28, 28), float32 on the CPU."""
    return encode_reconstruct_all(model, images, batch)[1]


def encode_reconstruct_all(model: Autoencoder, images: torch.Tensor, batch: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (n, latent) and reconstructed pixels (n, 1, 28, 28) of uint8 images in one pass (CPU, float32)."""
    if len(images) == 0:
        return torch.empty(0, model.latent), torch.empty(0, 1, 28, 28)

    def both(m: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = m.encode(x)
        pixels = torch.sigmoid(m.decode(z)).float().cpu().contiguous()
        return z.float().cpu(), pixels

    parts = _batched(model, images, both, batch)
    return torch.cat([z for z, _ in parts]), torch.cat([p for _, p in parts])


def fit_pca(bundle: DataBundle, latent: int) -> PCAModel:
    return PCAModel(latent).fit(bundle.train.images)


def _latent_quality(train_codes: np.ndarray, test_codes: np.ndarray, bundle: DataBundle, seed: int
                    ) -> dict[str, float]:
    test_pixels = bundle.test.images.reshape(len(bundle.test), -1).numpy().astype(np.float32) / 255.0
    return {"knn5": knn_accuracy(train_codes, bundle.train.labels.numpy(), test_codes, bundle.test.labels.numpy()),
            "trustworthiness": latent_trustworthiness(test_pixels, test_codes, seed=seed)}


def evaluate_model(model: Autoencoder, bundle: DataBundle, pca: PCAModel, seed: int = 0) -> dict[str, Any]:
    """Test-set metrics of ``model`` and of ``pca``, overall and per class, and their latent quality."""
    target = to_float(bundle.test.images)
    labels = bundle.test.labels.numpy()
    out: dict[str, Any] = {}
    test_codes_ae, recon_ae = encode_reconstruct_all(model, bundle.test.images)
    for name, recon, train_codes, test_codes in (
        ("autoencoder", recon_ae, encode_all(model, bundle.train.images), test_codes_ae),
        ("pca", pca.reconstruct(bundle.test.images), pca.encode(bundle.train.images), pca.encode(bundle.test.images)),
    ):
        summary = summarize(reconstruction_metrics(recon, target), labels, bundle.classes)
        summary["overall"].update(_latent_quality(train_codes.numpy(), test_codes.numpy(), bundle, seed))
        out[name] = summary
    return out


def evaluate_run(run: Run, bundle: DataBundle | None = None, model: Autoencoder | None = None) -> dict[str, Any]:
    """Evaluate a trained run on its test split and write ``metrics.json``; returns the metrics."""
    cfg = run.config()
    model = model if model is not None else run.load_model("best")
    bundle = bundle or load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction,
                                    seed=cfg.seed, classes=cfg.classes, train_limit=cfg.train_limit)
    t0 = time.perf_counter()
    pca = run.load_pca()
    if pca is None or pca.latent != cfg.latent:
        pca = fit_pca(bundle, cfg.latent)
        run.save_pca(pca)
    results = evaluate_model(model, bundle, pca, seed=cfg.seed)
    training = _training_summary(run)
    metrics = {
        "format": METRICS_FORMAT,
        "run": {"name": run.path.name, "dataset": cfg.dataset, "model": cfg.model, "latent": cfg.latent,
                "loss": cfg.loss, "parameters": count_parameters(model), **training},
        "split": {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
                  "classes": [bundle.classes[int(c)] for c in np.unique(bundle.test.labels.numpy())],
                  "source": bundle.source},
        "ssim_definition": SSIM_DEFINITION,
        **results,
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(run.metrics, metrics)
    return metrics


def _training_summary(run: Run) -> dict[str, Any]:
    """Epochs, best epoch, stop reason and training seconds from the last checkpoint, if any."""
    from aelab.runs import load_checkpoint

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
