"""Evaluation: every metric on the test images, in seconds, against a per-image scikit-image loop.

``evaluate_run`` is timed as ``aelab evaluate`` runs it (cold: the PCA baseline fitted and every result computed,
as at the end of training; warm: the PCA baseline, PCA's figures and the kNN sample's codes read back from the run
folder, as in a later ``aelab evaluate``), and its parts one by one. The peer computes the reconstruction
metrics the usual way, one image at a time with scikit-image (SSIM with DESIGN.md's settings, SSIM-7 with its
defaults, PSNR, MSE), on the very same reconstructions; its ratio is against aelab's
``reconstruction_metrics`` (which also computes BCE).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from bench_common import model_flops, ratio

from aelab.data import DataBundle, to_float
from aelab.evaluation import encode_all, evaluate_run, fit_pca, reconstruct_all
from aelab.evaluation.evaluate import knn_train_indices
from aelab.evaluation.metrics import knn_accuracy, latent_trustworthiness, reconstruction_metrics
from aelab.models import Autoencoder
from aelab.runs import Run


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def skimage_metrics(recon: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean SSIM, SSIM-7, PSNR and MSE of (n, 28, 28) float64 arrays, one image at a time."""
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    ssim, ssim7, psnr, mse = [], [], [], []
    for r, t in zip(recon, target, strict=True):
        ssim.append(structural_similarity(t, r, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False))
        ssim7.append(structural_similarity(t, r, data_range=1.0))
        psnr.append(peak_signal_noise_ratio(t, r, data_range=1.0))
        mse.append(mean_squared_error(t, r))
    return {"ssim": float(np.mean(ssim)), "ssim7": float(np.mean(ssim7)), "psnr": float(np.mean(psnr)),
            "mse": float(np.mean(mse))}


def run_evaluation(run: Run, model: Autoencoder, bundle: DataBundle, gflops: float | None = None
                   ) -> dict[str, Any]:
    model.eval()
    run.pca.unlink(missing_ok=True)
    run.eval_cache.unlink(missing_ok=True)
    metrics, cold = _timed(lambda: evaluate_run(run, bundle=bundle, model=model))
    _, warm = _timed(lambda: evaluate_run(run, bundle=bundle, model=model))
    target = to_float(bundle.test.images)
    parts: dict[str, float] = {}
    recon, parts["reconstruct_test"] = _timed(lambda: reconstruct_all(model, bundle.test.images))
    ours, parts["reconstruction_metrics"] = _timed(lambda: reconstruction_metrics(recon, target))
    train_codes, parts["encode_train"] = _timed(lambda: encode_all(model, bundle.train.images).numpy())
    test_codes, parts["encode_test"] = _timed(lambda: encode_all(model, bundle.test.images).numpy())
    _, parts["knn5"] = _timed(lambda: knn_accuracy(train_codes, bundle.train.labels.numpy(), test_codes,
                                                   bundle.test.labels.numpy()))
    # kNN-5 as evaluate_run fits it (a fixed sample of the training codes) against the fit on all of them.
    knn = knn_train_indices(len(bundle.train), 0)
    sample_acc, parts["knn5_on_the_sample"] = _timed(lambda: knn_accuracy(
        train_codes[knn], bundle.train.labels.numpy()[knn], test_codes, bundle.test.labels.numpy()))
    full_acc = knn_accuracy(train_codes, bundle.train.labels.numpy(), test_codes, bundle.test.labels.numpy())
    pixels = target.reshape(len(target), -1).numpy()
    _, parts["trustworthiness"] = _timed(lambda: latent_trustworthiness(pixels, test_codes))
    _, parts["pca_fit"] = _timed(lambda: fit_pca(bundle, model.latent))
    peer, peer_s = _timed(lambda: skimage_metrics(recon.squeeze(1).to(torch.float64).numpy(),
                                                  target.squeeze(1).to(torch.float64).numpy()))
    agree = {k: round(abs(float(np.mean(ours[k])) - v), 6) for k, v in peer.items()}
    # The floor: the network passes evaluation cannot skip (the test images through the whole autoencoder,
    # kNN-5's training sample through the encoder) at the machine's fp32 matmul ceiling.
    # Warm, the kNN sample's codes are read back: only the test images' pass remains.
    test_flops = len(bundle.test) * model_flops(model, "forward")
    flops = test_flops + len(knn) * model_flops(model, "encode")
    floor = round(flops / (gflops * 1e9), 2) if gflops else None
    warm_floor = round(test_flops / (gflops * 1e9), 2) if gflops else None
    return {
        "test_images": len(bundle.test), "train_images": len(bundle.train),
        "network_gflops": round(flops / 1e9, 1), "network_seconds_at_fp32_ceiling": floor,
        "warm_network_gflops": round(test_flops / 1e9, 1), "warm_network_seconds_at_fp32_ceiling": warm_floor,
        "evaluate_run_seconds_cold": cold, "evaluate_run_seconds_warm": warm,
        "evaluate_run_internal_seconds": metrics.get("eval_seconds"),
        "parts_seconds": parts,
        "peer": {"what": "scikit-image per image: SSIM (Gaussian), SSIM-7, PSNR, MSE", "seconds": peer_s,
                 "abs_difference_of_means": agree},
        "speedup_vs_skimage": ratio(peer_s, parts["reconstruction_metrics"], 1),
        "ssim": round(metrics["autoencoder"]["overall"]["ssim"], 4),
        "knn5": {"train_images_all": len(bundle.train), "train_images_sample": len(knn),
                 "accuracy_all": round(full_acc, 4), "accuracy_sample": round(sample_acc, 4)},
    }
