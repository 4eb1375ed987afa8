"""A VAE's numbers on real test images from a small real trained model: the IWAE bound against the ELBO,
its stability between estimator seeds, the metrics.json section and the report that shows it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aelab.config import resolve
from aelab.data import load_dataset
from aelab.evaluation import evaluate_run
from aelab.evaluation.vae import IWAE_IMAGES, IWAE_K, elbo_passes, iwae_passes, iwae_sample, vae_metrics
from aelab.experiments.jobs import train_job
from aelab.runs import Run


@pytest.fixture(scope="module")
def vae(tmp_path_factory, data_root):
    """A small real trained VAE for the estimator's properties: vae-dense (cheap to decode k times per image),
    latent 8, 3 epochs on 3,000 training images."""
    out = tmp_path_factory.mktemp("run") / "vae-dense8"
    cfg = resolve(overrides=dict(model="vae-dense", latent=8, width=0.5, train_limit=3000, epochs=3, batch_size=64,
                                 kl_warmup=1, threads=1, report=False))
    train_job(cfg, out=out, progress=False, evaluate=False)
    return Run.open(out).load_model("best")


@pytest.fixture(scope="module")
def test_images(data_root):
    return load_dataset("fashion-mnist").test.images


def test_iwae_is_never_looser_than_the_elbo(vae, test_images):
    images = test_images[:200]
    w = iwae_passes(vae, images, k=50, seed=0)
    # per image, from the same samples: log-mean-exp of the log weights >= their mean (Jensen), image by image
    assert (w["iwae"] >= w["elbo_mc"] - 1e-6).all()
    # and on average against the ELBO as reported (KL in closed form; one sample, or the same k samples)
    e = elbo_passes(vae, images, seed=1)
    assert w["iwae"].mean() > w["elbo"].mean() > -np.inf
    assert w["iwae"].mean() > (e["recon"] - e["kl"].sum(1)).mean()
    # k = 1 is the single-sample ELBO itself
    one = iwae_passes(vae, images, k=1, seed=0)
    np.testing.assert_allclose(one["iwae"], one["elbo_mc"], rtol=1e-6)


def test_iwae_tightens_with_k(vae, test_images):
    """Burda et al. 2016, theorem 1: the expected bound grows with k (here by whole nats for a small model)."""
    images = test_images[:200]
    means = [iwae_passes(vae, images, k=k, seed=3)["iwae"].mean() for k in (1, 10, 100)]
    assert means[0] + 1.0 < means[1] < means[2]


def test_iwae_is_stable_between_estimator_seeds_at_the_default_k(vae, test_images):
    """Two seeds of the estimator on the default image sample at the default k agree to 0.5 nats."""
    idx = iwae_sample(len(test_images), IWAE_IMAGES)
    assert np.array_equal(idx, iwae_sample(len(test_images), IWAE_IMAGES))  # the images do not follow the seed
    images = test_images[idx]
    a = iwae_passes(vae, images, k=IWAE_K, seed=1)["iwae"]
    b = iwae_passes(vae, images, k=IWAE_K, seed=2)["iwae"]
    assert not np.array_equal(a, b)  # two different estimates...
    assert abs(a.mean() - b.mean()) < 0.5  # ...of the same number


def test_vae_section_of_the_metrics(vae, test_images):
    v = vae_metrics(vae, test_images[:300], "fashion-mnist", k=20, iwae_images=100)
    assert v["units"] == "nats per image" and v["likelihood"] == "bernoulli" and v["images"] == 300
    assert v["elbo"] == pytest.approx(v["reconstruction"] - v["kl"])
    assert v["kl"] > 0 and v["elbo"] < 0
    assert v["iwae"] > v["iwae_elbo"] and v["iwae_images"] == 100 and v["iwae_k"] == 20
    assert len(v["kl_per_dim"]) == vae.latent and sum(v["kl_per_dim"]) == pytest.approx(v["kl"], rel=1e-3)
    assert 0 <= v["active_units"] <= vae.latent
    assert v["active_units"] == sum(x > v["active_threshold"] for x in v["posterior_mean_variance"])
    assert "binarized" not in v  # only for MNIST with the Bernoulli likelihood


def test_binarized_mnist_figure(vae, data_root):
    """On MNIST with the Bernoulli likelihood the bounds are also given on binarised images (seeded)."""
    images = load_dataset("mnist", test_limit=60).test.images
    v = vae_metrics(vae, images, "mnist", k=5, iwae_images=0)
    b = v["binarized"]
    assert b["iwae_images"] == 60 and b["iwae"] > b["iwae_elbo"]
    assert b["elbo"] != pytest.approx(v["elbo"])  # other images: binary pixels
    assert math.isfinite(b["elbo"])


def test_evaluate_and_report_a_vae_run(vae_run_path, tiny_run, tmp_path):
    """metrics.json gets the vae section and the plain run's metrics; the report shows the table and figures."""
    import shutil

    from aelab.report import write_report

    plain = tiny_run[0].path  # a plain conv-modified run, latent 16, evaluated
    run = Run(tmp_path / "vae")
    shutil.copytree(vae_run_path, run.path)
    metrics = evaluate_run(run, iwae_k=5, iwae_images=50, plain=plain)
    on_disk = json.loads(run.metrics.read_text())
    assert on_disk["vae"]["iwae_k"] == 5 and on_disk["run"]["loss"].startswith("negative ELBO, bernoulli")
    assert on_disk["plain_autoencoder"]["model"] == "conv-modified"
    assert metrics["autoencoder"]["overall"]["mse"] > 0
    write_report(run, tsne_sample=50, scatter_sample=200)
    html = run.report.read_text()
    for text in ('id="metrics-vae"', "IWAE bound, k = 5", "active units", "plain AE (conv-modified, latent 16)",
                 'id="prior_samples"', 'id="kl_per_dim"', "VAE (posterior mean)"):
        assert text in html, text
    assert (run.figures / "prior_samples.png").is_file()
    assert not (run.figures / "prior_manifold.png").exists()  # latent 8: the prior manifold is for 2-D only
