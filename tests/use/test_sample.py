"""A trained VAE in use: ``aelab sample`` on a real trained model, ``aelab.load`` and the estimator giving the
posterior mean, export of the mean encoder and the decoder, and resume of a VAE run."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import aelab
from aelab.cli import main
from aelab.config import resolve
from aelab.data import load_dataset, to_float
from aelab.models import prior_codes
from aelab.use.export import export_run
from tests.resume import model_weights, straight_and_resumed


def test_sample_command_writes_the_decoded_prior_samples(vae_run_path, tmp_path):
    out = tmp_path / "grid.png"
    r = CliRunner().invoke(main, ["sample", str(vae_run_path), "-n", "10", "-o", str(out), "--seed", "7"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"10 prior samples -> {out}"
    grid = np.asarray(Image.open(out))
    assert grid.shape == (3 * 29 - 1, 4 * 29 - 1) and grid.dtype == np.uint8  # ceil(sqrt(10)) = 4 per row, 3 rows
    model = aelab.load(vae_run_path)
    want = model.decode(prior_codes(10, model.latent, 7))
    tiles = np.stack([grid[r * 29:r * 29 + 28, c * 29:c * 29 + 28] for r in range(3) for c in range(4)][:10])
    np.testing.assert_allclose(tiles / 255.0, want, atol=0.5 / 255 + 1e-6)
    assert np.array_equal(model.sample(10, seed=7), want)
    assert not np.allclose(model.sample(10, seed=8), want)  # another seed, other samples
    assert float(want.std()) > 0.05  # decoded images, not a constant


def test_sample_refuses_plain_models_and_bad_requests(run_path, vae_run_path, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["sample", str(run_path), "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"error: run {run_path} is a plain autoencoder (conv-modified), which has no prior to sample from; train a "
        f"VAE (aelab train --model vae) and sample that"]
    r = runner.invoke(main, ["sample", str(vae_run_path), "--manifold", "5", "-o", str(tmp_path / "m.png")])
    assert r.exit_code == 2 and "--manifold needs a 2-D latent" in r.stderr
    r = runner.invoke(main, ["sample", str(vae_run_path), "-o", str(tmp_path / "g.jpg")])
    assert r.exit_code == 2 and "give a file name ending in .png" in r.stderr
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "m.png").exists()
    with pytest.raises(aelab.errors.RunError, match="no prior to sample from"):
        aelab.load(run_path).sample(3)


def test_load_and_estimator_use_the_posterior_mean(vae_run_path, data_root):
    model = aelab.load(vae_run_path)
    assert model.is_vae
    x = load_dataset("fashion-mnist", test_limit=50).test.images.numpy()
    codes = model.encode(x)
    with torch.no_grad():
        mean, _ = model.model.posterior(to_float(torch.from_numpy(x)))
    np.testing.assert_allclose(codes, mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(model.encode(x), codes)  # deterministic: no sampling in transform

    reducer = aelab.AutoencoderReducer(n_components=3, model="vae-dense", width=0.25, epochs=1, random_state=0,
                                       threads=1)
    train = load_dataset("fashion-mnist", train_limit=600).train.images.numpy().reshape(-1, 784)
    z = reducer.fit(train).transform(train[:20])
    np.testing.assert_allclose(z, reducer.transform(train[:20]))
    with torch.no_grad():
        mean, _ = reducer.model_.model.posterior(torch.from_numpy(train[:20]).float().div(255).reshape(-1, 1, 28, 28))
    np.testing.assert_allclose(z, mean.numpy(), atol=1e-4)


def test_export_ships_the_mean_encoder_and_the_decoder(vae_run_path, tmp_path, data_root):
    res = export_run(vae_run_path, "onnx", tmp_path / "onnx")
    model = aelab.load(vae_run_path)
    x = (load_dataset("fashion-mnist", test_limit=40).test.images.numpy().astype(np.float32) / 255.0)[:, None]
    enc = ort.InferenceSession(str(res.encoder), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(res.decoder), providers=["CPUExecutionProvider"])
    codes = enc.run(None, {"images": x})[0]
    np.testing.assert_allclose(codes, model.encode(x), atol=1e-5)
    z = prior_codes(8, model.latent, 0)
    np.testing.assert_allclose(dec.run(None, {"codes": z})[0][:, 0], model.decode(z), atol=1e-5)
    info = json.loads(res.info.read_text())
    assert info["model"]["model"] == "vae" and "posterior mean" in info["encoder"]["output"]




@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_resume_of_a_vae_run_equals_the_uninterrupted_run(tmp_path, data_root, likelihood):
    """Interrupted after epoch 1 by a real Ctrl-C (mid KL warm-up) and resumed: the same weights (the learned
    sigma too), the same history, as training straight through."""
    bundle = load_dataset("fashion-mnist", val_fraction=0.1, seed=0, train_limit=1200)
    cfg = resolve(overrides=dict(model="vae", likelihood=likelihood, latent=8, width=0.5, epochs=2, kl_warmup=1.5,
                                 train_limit=1200, threads=1, report=False))
    straight, parted = straight_and_resumed(cfg, bundle, tmp_path)
    a, b = model_weights(straight.last), model_weights(parted.last)
    assert a.keys() == b.keys() and ("model.log_sigma" in a) == (likelihood == "gaussian")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    rows_a = list(csv.DictReader(straight.history.open()))
    rows_b = list(csv.DictReader(parted.history.open()))
    assert [float(r["val_loss"]) for r in rows_a] == pytest.approx([float(r["val_loss"]) for r in rows_b], rel=1e-5)
    assert float(rows_a[1]["val_loss"]) < float(rows_a[0]["val_loss"])  # it learns
