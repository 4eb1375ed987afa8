"""Reconstruction and latent-space metrics: pure functions on tensors (DESIGN.md, "What the numbers mean").

SSIM is computed here rather than with torchmetrics because torchmetrics averages the SSIM map over the
reflect-padded border too, which is not the definition we report (scikit-image / ``tf.image.ssim`` average
over the valid region only). Ours is a separable, valid-region filtering, agrees with scikit-image to
1e-4 (tests/evaluation/test_metrics.py), runs batched, and is differentiable (the SSIM-aware training loss uses
it). The filtering is two matrix products with banded window matrices rather than a depthwise convolution: the
same sums, 5-6x faster on CPU (the depthwise conv2d with a 1-row kernel is a slow oneDNN path; measured in
benchmarks/README.md), and it is part of every training step of the default loss.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

K1, K2 = 0.01, 0.03


@functools.lru_cache(maxsize=16)
def ssim_window(kind: str, side: int = 11) -> tuple[torch.Tensor, bool]:
    """(normalised 1-D window, use sample covariance) for ``gaussian`` (11 taps, sigma 1.5) or ``uniform7``.

    Images smaller than the window (``side`` pixels on their short side) get the largest odd window that fits:
    the Gaussian cut to that many taps (same sigma, renormalised), the uniform window narrowed. A short side of
    1 or 2 pixels leaves a 1x1 window, whose single sample has no sample covariance: it is taken as 0 (the
    population covariance), so that SSIM is defined (its luminance term) for any image; aelab's data loading
    refuses such images (``data.own.MIN_SIDE``).
    """
    fit = side if side % 2 else side - 1
    if kind == "gaussian":
        sigma, radius = 1.5, int(3.5 * 1.5 + 0.5)  # scipy.ndimage.gaussian_filter(truncate=3.5), as skimage
        radius = max(0, min(radius, (fit - 1) // 2))
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        w = torch.exp(-0.5 * (x / sigma) ** 2)
        return w / w.sum(), False
    if kind == "uniform7":
        taps = max(1, min(7, fit))
        return torch.full((taps,), 1.0 / taps, dtype=torch.float64), True
    raise ValueError(f"unknown SSIM window {kind!r}")


@functools.lru_cache(maxsize=32)
def _band(size: int, kind: str, side: int) -> torch.Tensor:
    """(size, size - k + 1) float64 matrix whose column i holds the 1-D window at rows i..i+k-1: ``x @ band``
    filters the last axis of ``x`` over the valid region (``band.T @ x`` the one before it)."""
    # A normal tensor even when first built under inference mode (an evaluation): the cached matrix also serves
    # the training loss, and autograd refuses inference tensors.
    with torch.inference_mode(False):
        w1 = ssim_window(kind, side)[0]
        k = w1.numel()
        out = size - k + 1
        band = torch.zeros(size, out, dtype=torch.float64)
        idx = torch.arange(out)
        for j in range(k):
            band[idx + j, idx] = w1[j]
    return band


def ssim_per_image(x: torch.Tensor, y: torch.Tensor, window: str = "gaussian",
                   data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM over the valid region of each image pair; ``x``, ``y``: (n, C, h, w) in [0, data_range].

    ``gaussian``: 11x11 Gaussian window, sigma 1.5, population covariance (the headline SSIM).
    ``uniform7``: 7x7 uniform window with sample covariance (scikit-image's default, "SSIM-7").
    Colour images (C > 1): SSIM of each channel, averaged over the channels (scikit-image's ``channel_axis``,
    ``tf.image.ssim``). Images smaller than the window: see ``ssim_window``.
    """
    n, c = x.shape[0], x.shape[1]
    if c > 1:
        flat = (n * c, 1, *x.shape[2:])
        return ssim_per_image(x.reshape(flat), y.reshape(flat), window, data_range).reshape(n, c).mean(dim=1)
    side = int(min(x.shape[-2:]))
    w1, sample_cov = ssim_window(window, side)
    k = w1.numel()
    rows = _band(x.shape[-2], window, side).to(device=x.device, dtype=x.dtype)
    cols = _band(x.shape[-1], window, side).to(device=x.device, dtype=x.dtype)
    with torch.autocast(x.device.type, enabled=False):  # the window sums in the inputs' precision
        stack = torch.stack([x, y, x * x, y * y, x * y])  # (5, n, 1, h, w)
        mx, my, exx, eyy, exy = (rows.T @ stack @ cols).unbind(dim=0)  # each (n, 1, h - k + 1, w - k + 1)
    norm = k * k / (k * k - 1.0) if sample_cov and k > 1 else 1.0  # one sample: no sample covariance
    vx = (exx - mx * mx) * norm
    vy = (eyy - my * my) * norm
    cxy = (exy - mx * my) * norm
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).pow(2).flatten(1).mean(dim=1)


def psnr_per_image(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """10 * log10(range^2 / MSE) per image (as ``tf.image.psnr``); a perfect image gives +inf."""
    return 10.0 * torch.log10(data_range**2 / mse_per_image(x, y))


def bce_per_image(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Binary cross-entropy per pixel in nats; ``pred`` pixels are clipped to [eps, 1 - eps]."""
    p = pred.clamp(eps, 1 - eps)
    return -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).flatten(1).mean(dim=1)


def reconstruction_metrics(recon: torch.Tensor, target: torch.Tensor, batch: int = 2000) -> dict[str, np.ndarray]:
    """Per-image SSIM, SSIM-7, PSNR, MSE and BCE of ``recon`` against ``target`` (both pixels in [0, 1])."""
    out: dict[str, list[torch.Tensor]] = {"ssim": [], "ssim7": [], "psnr": [], "mse": [], "bce": []}
    with torch.inference_mode():
        for i in range(0, recon.shape[0], batch):
            r = recon[i:i + batch].to(torch.float32)  # float32 agrees with float64 to ~3e-6 in SSIM
            t = target[i:i + batch].to(torch.float32)
            out["ssim"].append(ssim_per_image(r, t, "gaussian"))
            out["ssim7"].append(ssim_per_image(r, t, "uniform7"))
            out["psnr"].append(psnr_per_image(r, t))
            out["mse"].append(mse_per_image(r, t))
            out["bce"].append(bce_per_image(r, t))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def summarize(per_image: dict[str, np.ndarray], labels: np.ndarray, class_names: tuple[str, ...]
              ) -> dict[str, object]:
    """Overall means and per-class means of per-image metrics (``class_names`` distinct: two classes of one name
    would be merged into one row)."""
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names repeat ({', '.join(class_names[:8])}...); per-class metrics need distinct names")
    overall = {k: float(np.mean(v)) for k, v in per_image.items()}
    per_class = {}
    for c in np.unique(labels):
        m = labels == c
        per_class[class_names[int(c)]] = {k: float(np.mean(v[m])) for k, v in per_image.items()} | {
            "n": int(m.sum())}
    return {"overall": overall, "per_class": per_class}


def knn_accuracy(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                 test_labels: np.ndarray, k: int = 5) -> float:
    """Accuracy of a k-nearest-neighbour classifier fitted on train codes, scored on test codes."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", n_jobs=-1)
    clf.fit(train_codes, train_labels)
    return float(clf.score(test_codes, test_labels))


def latent_trustworthiness(images: np.ndarray, codes: np.ndarray, n: int = 2000, seed: int = 0,
                           n_neighbors: int = 5) -> float:
    """scikit-learn's trustworthiness of the map images -> codes on a fixed, seeded sample of ``n`` images."""
    from sklearn.manifold import trustworthiness

    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return float(trustworthiness(images[idx].reshape(len(idx), -1), codes[idx], n_neighbors=n_neighbors))
