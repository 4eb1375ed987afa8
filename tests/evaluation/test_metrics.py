"""Metrics: agreement with scikit-image on real images, and the reference figures of DESIGN.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aelab.data import load_dataset, to_float
from aelab.evaluation.metrics import (
    bce_per_image,
    psnr_per_image,
    reconstruction_metrics,
    ssim_per_image,
    summarize,
)
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


def _ssim_by_depthwise_conv(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The formulation ssim_per_image replaced (separable depthwise conv2d, valid region), as a reference."""
    import torch.nn.functional as F

    from aelab.evaluation.metrics import K1, K2, ssim_window

    w1 = ssim_window("gaussian")[0].to(x.dtype)
    k = w1.numel()
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    stack = F.conv2d(stack, w1.view(1, 1, 1, k).expand(5, 1, 1, k), groups=5)
    mx, my, exx, eyy, exy = F.conv2d(stack, w1.view(1, 1, k, 1).expand(5, 1, k, 1), groups=5).unbind(dim=1)
    c1, c2 = K1**2, K2**2
    s = ((2 * mx * my + c1) * (2 * (exy - mx * my) + c2)) / (
        (mx * mx + my * my + c1) * (exx - mx * mx + eyy - my * my + c2))
    return s.flatten(1).mean(dim=1)


def test_ssim_and_its_gradient_equal_the_depthwise_convolution(fashion):
    """The banded-matrix filtering is the same sums as the convolution it replaced: values and the training
    loss's gradient agree (float64, real images and noisy copies), non-square images too."""
    target = to_float(fashion.test.images[:64]).double()
    noisy = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64)).clamp(0, 1)
    for crop in (slice(None), slice(3, 25)):
        t, r = target[..., crop], noisy[..., crop]
        mine, ref = r.clone().requires_grad_(True), r.clone().requires_grad_(True)
        ours, theirs = ssim_per_image(mine, t), _ssim_by_depthwise_conv(ref, t)
        assert torch.allclose(ours, theirs, atol=1e-12)
        ours.mean().backward()
        theirs.mean().backward()
        assert torch.allclose(mine.grad, ref.grad, atol=1e-12) and mine.grad.abs().sum() > 0


def test_ssim_first_used_in_inference_mode_still_trains():
    """The window matrices are cached: built first inside an evaluation (inference mode), they must still serve
    the training loss's backward pass (autograd refuses inference tensors)."""
    from aelab.evaluation.metrics import _band

    _band.cache_clear()
    x, y = torch.rand(2, 1, 28, 28, dtype=torch.float64), torch.rand(2, 1, 28, 28, dtype=torch.float64)
    with torch.inference_mode():
        ssim_per_image(x, y)
    pred = x.clone().requires_grad_(True)
    ssim_per_image(pred, y).mean().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_ssim_keeps_the_inputs_precision_under_bf16_autocast(fashion):
    """In bf16 training the SSIM term's window sums stay in float32 (autocast would round matmuls to bf16)."""
    target = to_float(fashion.test.images[:32])
    recon = (target + 0.05).clamp(0, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ssim_per_image(recon, target)
    assert mixed.dtype == torch.float32
    assert (mixed - ssim_per_image(recon, target)).abs().max() < 1e-6


def test_colour_ssim_is_the_mean_over_channels_as_scikit_image():
    """SSIM of an RGB image: each channel's SSIM, averaged (scikit-image's channel_axis), on real photographs."""
    from skimage import data as samples

    rng = np.random.default_rng(0)
    photos = [samples.astronaut()[100:164, 120:184], samples.chelsea()[50:114, 200:264], samples.coffee()[:64, :64]]
    target = np.stack(photos).astype(np.float64) / 255.0
    recon = np.clip(target + rng.normal(0, 0.08, target.shape), 0, 1)
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    for window, kwargs in (("gaussian", dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)),
                           ("uniform7", {})):
        ours = ssim_per_image(nchw(recon), nchw(target), window).numpy()
        ref = [structural_similarity(t, r, data_range=1.0, channel_axis=-1, **kwargs)
               for t, r in zip(target, recon, strict=True)]
        assert np.abs(ours - ref).max() < 1e-6
        per_channel = ssim_per_image(nchw(recon)[:, :1], nchw(target)[:, :1], window).numpy()
        assert np.abs(ours - per_channel).max() > 1e-3  # the channels differ: the mean is not the first channel


def test_images_smaller_than_the_window_get_the_largest_window_that_fits():
    """8x8 images (scikit-learn's digits): a 7-tap Gaussian (sigma 1.5, cut and renormalised) and a 7x7 uniform
    window; the uniform one is scikit-image's win_size=7, the Gaussian scipy's filter cut at 3 pixels."""
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits

    digits = load_digits().images[:20] / 16.0
    rng = np.random.default_rng(1)
    noisy = np.clip(digits + rng.normal(0, 0.1, digits.shape), 0, 1)
    t, r = torch.from_numpy(digits)[:, None], torch.from_numpy(noisy)[:, None]
    ours7 = ssim_per_image(r, t, "uniform7").numpy()
    ref7 = [structural_similarity(a, b, data_range=1.0, win_size=7) for a, b in zip(digits, noisy, strict=True)]
    assert np.abs(ours7 - ref7).max() < 1e-6

    def reference(a: np.ndarray, b: np.ndarray) -> float:
        f = lambda v: gaussian_filter(v, 1.5, truncate=2.0)[3:-3, 3:-3]  # noqa: E731 - radius 3, valid region
        mx, my = f(a), f(b)
        vx, vy, cxy = f(a * a) - mx * mx, f(b * b) - my * my, f(a * b) - mx * my
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())

    ours = ssim_per_image(r, t).numpy()
    assert np.abs(ours - [reference(b, a) for a, b in zip(digits, noisy, strict=True)]).max() < 1e-6
    assert np.allclose(ssim_per_image(t, t).numpy(), 1.0)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 14), w=st.integers(1, 14), window=st.sampled_from(["gaussian", "uniform7"]),
       seed=st.integers(0, 2**16))
def test_ssim_is_defined_for_every_image_size(h, w, window, seed):
    """Any size down to 1x1 (issue 29: a 1-pixel side left SSIM-7 a 1-tap window whose sample covariance divided
    by zero after training): finite, in [-1, 1], 1 for identical images; crops of the camera man and noisy copies.
    The data loading refuses images under 3 pixels a side, but the metric itself is total."""
    from skimage import data as samples

    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 512 - h), rng.integers(0, 512 - w)
    target = torch.from_numpy(samples.camera()[top:top + h, left:left + w] / 255.0)[None, None]
    recon = (target + torch.from_numpy(rng.normal(0, 0.1, target.shape))).clamp(0, 1)
    s = ssim_per_image(recon, target, window)
    assert torch.isfinite(s).all() and (s.abs() <= 1 + 1e-9).all()
    assert torch.allclose(ssim_per_image(target, target, window), torch.ones(1, dtype=torch.float64))


def test_per_class_metrics_refuse_repeated_class_names():
    """Two classes of one name would be merged into one row of the per-class table (issue 29, case 7)."""
    per_image = {"mse": np.array([0.1, 0.2, 0.3])}
    with pytest.raises(ValueError, match="class names repeat"):
        summarize(per_image, np.array([0, 1, 2]), ("a", "b", "a"))
    assert list(summarize(per_image, np.array([0, 1, 2]), ("a", "b", "c"))["per_class"]) == ["a", "b", "c"]
