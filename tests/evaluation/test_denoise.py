"""Evaluating a denoising run: every method on the same noisy test images against the clean ones, the filter
chosen on the validation split only, and the report's table and figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aelab.config import resolve
from aelab.data import load_dataset, to_float
from aelab.data.noise import TEST_STREAM, NoiseSpec, corrupt_images
from aelab.evaluation.denoise import apply_filter, choose_filter, evaluate_denoising
from aelab.evaluation.metrics import ssim_per_image
from aelab.experiments.jobs import train_job
from aelab.models import PCAModel


@pytest.fixture(scope="module")
def denoising_run(tmp_path_factory, data_root):
    cfg = resolve(overrides=dict(model="dense", width=0.5, latent=16, loss="mse", epochs=2, batch_size=64,
                                 train_limit=1500, threads=1, noise="gaussian:0.3"))
    run, metrics = train_job(cfg, tmp_path_factory.mktemp("dn") / "run", progress=False)
    return run, metrics, cfg


def test_metrics_have_the_noisy_test_set_beside_three_baselines(denoising_run) -> None:
    run, metrics, cfg = denoising_run
    d = metrics["denoising"]
    assert d["noise"] == "gaussian:0.3" and set(d["methods"]) == {"autoencoder", "noisy", "pca", "filter",
                                                                  "autoencoder_clean"}
    bundle = load_dataset("fashion-mnist", **cfg.data_kwargs())
    clean = to_float(bundle.test.images)
    noisy = corrupt_images(bundle.test.images, NoiseSpec("gaussian", 0.3), cfg.seed, TEST_STREAM)
    # The "noisy input" row is exactly the noisy test images scored against the clean ones.
    assert d["methods"]["noisy"]["overall"]["ssim"] == pytest.approx(float(ssim_per_image(noisy, clean).mean()),
                                                                      abs=1e-5)
    for k, m in d["methods"].items():
        assert len(m["per_class"]) == 10 and 0 < m["overall"]["ssim"] < 1, k
    best = max(("noisy", "pca", "filter"), key=lambda k: d["methods"][k]["overall"]["ssim"])
    assert d["best_baseline"] == best
    assert d["ssim_margin"] == pytest.approx(d["methods"]["autoencoder"]["overall"]["ssim"]
                                             - d["methods"][best]["overall"]["ssim"])
    # A filter helps against Gaussian noise: the chosen one beats doing nothing.
    assert d["methods"]["filter"]["overall"]["ssim"] > d["methods"]["noisy"]["overall"]["ssim"]
    html = run.report.read_text()
    assert 'id="metrics-denoising"' in html and "SSIM margin of the autoencoder" in html
    for name in ("denoise_random.png", "denoise_best.png", "denoise_worst.png", "denoise_by_class.png"):
        assert (run.figures / name).stat().st_size > 5000


def test_the_filter_is_chosen_on_validation_images_only(denoising_run) -> None:
    run, metrics, cfg = denoising_run
    model = run.load_model("best")
    spec = NoiseSpec.parse(cfg.noise)
    a = load_dataset("fashion-mnist", **cfg.data_kwargs())
    b = load_dataset("fashion-mnist", **cfg.data_kwargs(), test_limit=500)
    pca = PCAModel(cfg.latent).fit(a.train.images)
    da, _ = evaluate_denoising(model, a, spec, pca, cfg.seed)
    db, _ = evaluate_denoising(model, b, spec, pca, cfg.seed)
    assert da["filter"]["name"] == db["filter"]["name"] == metrics["denoising"]["filter"]["name"]
    assert da["filter"]["tried"] == db["filter"]["tried"]  # the same validation images, whatever the test set


def test_choose_filter_picks_the_best_candidate() -> None:
    rng = np.random.default_rng(0)
    clean = np.zeros((40, 28, 28), np.float32)
    clean[:, 8:20, 8:20] = 1.0
    noisy = np.clip(clean + rng.normal(0, 0.3, clean.shape), 0, 1).astype(np.float32)
    kind, param, tried = choose_filter(noisy, clean)
    best = apply_filter(noisy, kind, param)
    ssim = float(ssim_per_image(torch.from_numpy(best).unsqueeze(1), torch.from_numpy(clean).unsqueeze(1)).mean())
    assert ssim == pytest.approx(max(tried.values()), abs=1e-6)
    assert max(tried.values()) > float(ssim_per_image(torch.from_numpy(noisy).unsqueeze(1),
                                                      torch.from_numpy(clean).unsqueeze(1)).mean())
