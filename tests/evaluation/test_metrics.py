"""Metrics: agreement with scikit-image on real images, and the reference figures of DESIGN.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aelab.data import load_dataset, to_float
from aelab.evaluation.metrics import bce_per_image, psnr_per_image, reconstruction_metrics, ssim_per_image
from aelab.models import PCAModel


@pytest.fixture(scope="module")
def fashion(data_root):
    return load_dataset("fashion-mnist", val_fraction=0.0)


@pytest.fixture(scope="module")
def pca64(fashion):
    return PCAModel(64).fit(fashion.train.images)


def test_ssim_agrees_with_scikit_image_on_1000_real_images(fashion, pca64):
    target = to_float(fashion.test.images[:1000])
    recon = pca64.reconstruct(fashion.test.images[:1000])
    ours = ssim_per_image(recon, target).numpy()
    ours7 = ssim_per_image(recon, target, "uniform7").numpy()
    ref = np.array([structural_similarity(t[0], r[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
                    for t, r in zip(target.numpy(), recon.numpy(), strict=True)])
    ref7 = np.array([structural_similarity(t[0], r[0], data_range=1.0)
                     for t, r in zip(target.numpy(), recon.numpy(), strict=True)])
    assert np.abs(ours - ref).max() < 1e-4
    assert np.abs(ours7 - ref7).max() < 1e-4
    assert abs(ours.mean() - ours7.mean()) > 1e-3  # the two definitions differ, so the labels matter


def test_psnr_agrees_with_scikit_image(fashion, pca64):
    target = to_float(fashion.test.images[:200]).double()
    recon = pca64.reconstruct(fashion.test.images[:200]).double()
    ours = psnr_per_image(recon, target).numpy()
    ref = [peak_signal_noise_ratio(t[0], r[0], data_range=1.0) for t, r in zip(target.numpy(), recon.numpy(),
                                                                             strict=True)]
    assert np.allclose(ours, ref, atol=1e-6)


def test_pca_reference_figures_of_the_design(fashion, pca64):
    m = reconstruction_metrics(pca64.reconstruct(fashion.test.images), to_float(fashion.test.images))
    assert m["mse"].mean() == pytest.approx(0.0098, abs=0.0005)
    assert m["ssim"].mean() == pytest.approx(0.705, abs=0.005)


def test_perfect_reconstruction_bce_floor_and_ssim_one(fashion):
    x = to_float(fashion.test.images)
    assert bce_per_image(x, x).mean().item() == pytest.approx(0.242, abs=0.002)
    assert torch.allclose(ssim_per_image(x[:50], x[:50]), torch.ones(50))


def test_ssim_is_differentiable():
    x = torch.rand(4, 1, 28, 28)
    y = torch.rand(4, 1, 28, 28, requires_grad=True)
    ssim_per_image(y, x).mean().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
