"""Judging a denoising run: the test set corrupted with the run's noise, each method scored against the clean images.

The test images are corrupted once with the run's ``--noise`` and a fixed stream (``data.noise.TEST_STREAM``,
seeded by the run's seed), so every evaluation of the run sees the same noisy images. Methods, all on the same
noisy images and all scored with ``metrics.reconstruction_metrics`` against the clean images:

- ``autoencoder``: the run's model on the noisy images (the denoised images);
- ``noisy``: the noisy images themselves (doing nothing);
- ``pca``: PCA of the run's latent size, fitted on the clean training images, projecting and reconstructing;
- ``filter``: the classical filter (scipy.ndimage Gaussian or median filter) whose kind and parameter give
  the highest mean SSIM on the validation split corrupted the same way (its own stream): never the test set;
- ``autoencoder_clean``: the same model on the clean test images, so the cost of the noise is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from aelab.data import DataBundle, to_float
from aelab.data.noise import TEST_STREAM, VAL_STREAM, NoiseSpec, corrupt_images
from aelab.evaluation.metrics import reconstruction_metrics, ssim_per_image, summarize
from aelab.evaluation.passes import BatchedInference
from aelab.models import Autoencoder, PCAModel

# The classical filters tried on the validation split: (kind, parameter) -> what the parameter is.
FILTER_GRID: tuple[tuple[str, float], ...] = (
    *(("gaussian", s) for s in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)),
    *(("median", float(k)) for k in (2, 3, 4, 5)),
)
FILTER_VAL_IMAGES = 2000  # validation images the filter is chosen on
METHODS = ("autoencoder", "noisy", "pca", "filter")
METHOD_LABELS = {"autoencoder": "autoencoder (denoised)", "noisy": "noisy input (no denoising)",
                 "pca": "PCA, same latent (fitted on clean images)", "filter": "classical filter",
                 "autoencoder_clean": "autoencoder on clean input"}


def apply_filter(images: np.ndarray, kind: str, param: float) -> np.ndarray:
    """A stack of images (n, 28, 28) filtered one by one: scipy.ndimage's Gaussian filter (sigma ``param``) or
    median filter (``param`` x ``param`` window), edges reflected."""
    if kind == "gaussian":
        return ndimage.gaussian_filter(images, sigma=(0.0, param, param), mode="reflect")
    if kind == "median":
        return ndimage.median_filter(images, size=(1, int(param), int(param)), mode="reflect")
    raise ValueError(f"unknown filter {kind!r}")


def filter_name(kind: str, param: float) -> str:
    return f"Gaussian filter, sigma {param:g}" if kind == "gaussian" else f"median filter, {param:g}x{param:g}"


def choose_filter(noisy: np.ndarray, clean: np.ndarray) -> tuple[str, float, dict[str, float]]:
    """The (kind, parameter) of ``FILTER_GRID`` of highest mean SSIM on (noisy, clean) validation images, with
    every candidate's mean SSIM."""
    target = torch.from_numpy(clean).unsqueeze(1)
    tried = {}
    for kind, param in FILTER_GRID:
        out = torch.from_numpy(apply_filter(noisy, kind, param)).unsqueeze(1)
        tried[(kind, param)] = float(ssim_per_image(out, target).mean())
    best = max(tried, key=lambda key: tried[key])
    return best[0], best[1], {filter_name(k, p): v for (k, p), v in tried.items()}


def denoise_all(model: Autoencoder, pixels: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """The model's output pixels (n, 1, 28, 28) in [0, 1] for float input pixels (n, 1, 28, 28), on the CPU."""
    out = BatchedInference(model, batch).map(pixels, lambda m, x: torch.sigmoid(m(x).float()).cpu().contiguous())
    return torch.cat(out) if out else torch.empty(0, *model.image_shape)


@dataclass
class DenoisePasses:
    """The test split as the denoising evaluation saw it (arrays (n, 28, 28) in [0, 1]), for the figures."""

    clean: np.ndarray
    noisy: np.ndarray
    denoised: np.ndarray
    filtered: np.ndarray
    ssim: np.ndarray         # (n,) SSIM of ``denoised`` against ``clean``
    ssim_noisy: np.ndarray   # (n,) SSIM of ``noisy`` against ``clean``


def evaluate_denoising(model: Autoencoder, bundle: DataBundle, spec: NoiseSpec, pca: PCAModel, seed: int
                       ) -> tuple[dict[str, Any], DenoisePasses]:
    """The ``denoising`` section of metrics.json (see the module docstring) and the per-image passes."""
    n_val = min(FILTER_VAL_IMAGES, len(bundle.val))
    val_clean = bundle.val.images[:n_val].numpy().astype(np.float32) / 255.0
    val_noisy = corrupt_images(bundle.val.images[:n_val], spec, seed, VAL_STREAM)[:, 0].numpy()
    kind, param, tried = choose_filter(val_noisy, val_clean) if n_val else ("gaussian", 1.0, {})
    clean = to_float(bundle.test.images)
    noisy = corrupt_images(bundle.test.images, spec, seed, TEST_STREAM)
    outputs = {"autoencoder": denoise_all(model, noisy), "noisy": noisy, "pca": pca.reconstruct(noisy),
               "filter": torch.from_numpy(apply_filter(noisy[:, 0].numpy(), kind, param)).unsqueeze(1),
               "autoencoder_clean": denoise_all(model, clean)}
    labels = bundle.test.labels.numpy()
    per_image = {k: reconstruction_metrics(v, clean) for k, v in outputs.items()}
    methods = {k: {"label": METHOD_LABELS[k] + (f" ({filter_name(kind, param)})" if k == "filter" else ""),
                   **summarize(per_image[k], labels, bundle.classes)} for k in outputs}
    ssim = {k: methods[k]["overall"]["ssim"] for k in METHODS}
    best = max(("noisy", "pca", "filter"), key=lambda k: ssim[k])
    section = {
        "noise": str(spec), "description": spec.describe(), "seed": seed,
        "images": "the test split corrupted once with a fixed stream of the run's seed",
        "filter": {"kind": kind, "param": param, "name": filter_name(kind, param), "chosen_on": f"{n_val} "
                   "validation images corrupted the same way (their own stream), by mean SSIM", "tried": tried},
        "methods": methods,
        "best_baseline": best,
        "ssim_margin": ssim["autoencoder"] - ssim[best],
    }
    n = len(clean)
    passes = DenoisePasses(clean=clean.numpy().reshape(n, 28, 28), noisy=noisy.numpy().reshape(n, 28, 28),
                           denoised=outputs["autoencoder"].numpy().reshape(n, 28, 28),
                           filtered=outputs["filter"].numpy().reshape(n, 28, 28),
                           ssim=per_image["autoencoder"]["ssim"], ssim_noisy=per_image["noisy"]["ssim"])
    return section, passes


def format_denoising(section: dict[str, Any]) -> str:
    """The denoising table as plain text: SSIM, PSNR, MSE of each method against the clean test images."""
    lines = [f"denoising: {section['description']}; every method on the same noisy test images, scored against the "
             f"clean ones", f"{'':<58}{'SSIM':>8}{'PSNR dB':>9}{'MSE':>9}"]
    for m in section["methods"].values():
        o = m["overall"]
        lines.append(f"{m['label']:<58}{o['ssim']:>8.4f}{o['psnr']:>9.2f}{o['mse']:>9.5f}")
    lines.append(f"SSIM margin over the best baseline ({section['best_baseline']}): {section['ssim_margin']:+.4f}")
    return "\n".join(lines)
