"""Input corruption for denoising: the statistics of each noise, seeded repeatability, the option, and a
denoising training that resumes exactly (the noise stream included)."""

from __future__ import annotations

import pytest
import torch

from aelab.config import resolve
from aelab.data import load_dataset
from aelab.data.noise import PATCH, TRAIN_STREAM, NoiseSpec, corrupt_images, generator_for
from aelab.errors import ConfigError
from aelab.runs import Run
from aelab.training import Trainer
from tests.resume import model_weights, straight_and_resumed


def _grey(n: int = 400, value: float = 0.5) -> torch.Tensor:
    return torch.full((n, 1, 28, 28), value)


def test_gaussian_noise_has_the_asked_sigma_and_stays_in_range() -> None:
    x = _grey()
    out = NoiseSpec("gaussian", 0.1).apply(x, generator_for(0, TRAIN_STREAM, 0, 0))
    diff = out - x
    assert abs(float(diff.mean())) < 0.002
    assert float(diff.std()) == pytest.approx(0.1, rel=0.02)  # at 0.5 +- 0.1 clipping almost never bites
    strong = NoiseSpec("gaussian", 0.3).apply(torch.zeros(200, 1, 28, 28), generator_for(0, 0, 0, 0))
    assert float(strong.min()) == 0.0 and float(strong.max()) <= 1.0
    assert float((strong > 0).float().mean()) == pytest.approx(0.5, abs=0.01)  # half the draws clipped at 0


def test_salt_and_pepper_replaces_the_asked_share_half_black_half_white() -> None:
    x = _grey(1000)
    out = NoiseSpec("salt-pepper", 0.2).apply(x, generator_for(1, TRAIN_STREAM, 3, 7))
    black, white = float((out == 0).float().mean()), float((out == 1).float().mean())
    assert black + white == pytest.approx(0.2, abs=0.003)
    assert black == pytest.approx(0.1, abs=0.003) and white == pytest.approx(0.1, abs=0.003)
    assert bool(((out == 0) | (out == 1) | (out == x)).all())


def test_mask_erases_whole_patches_the_asked_fraction() -> None:
    spec = NoiseSpec("mask", 0.25)
    out = spec.apply(torch.ones(50, 1, 28, 28), generator_for(0, TRAIN_STREAM, 0, 0))
    patches = out.reshape(50, 7, PATCH, 7, PATCH).permute(0, 1, 3, 2, 4).reshape(50, 49, PATCH * PATCH)
    zero = (patches == 0).all(-1)
    assert bool(((patches == 0).all(-1) | (patches == 1).all(-1)).all())  # a patch is erased whole or not at all
    assert zero.sum(1).tolist() == [spec.masked_patches()] * 50 and spec.masked_patches() == 12
    assert len({tuple(z.nonzero().flatten().tolist()) for z in zero}) > 40  # different patches per image


@pytest.mark.parametrize("text", ["gaussian:0.3", "salt-pepper:0.1", "mask:0.5"])
def test_the_noise_is_a_pure_function_of_seed_stream_epoch_batch(text: str) -> None:
    spec = NoiseSpec.parse(text)
    x = torch.rand(64, 1, 28, 28)
    a = spec.apply(x, generator_for(5, TRAIN_STREAM, 2, 9))
    assert torch.equal(a, spec.apply(x, generator_for(5, TRAIN_STREAM, 2, 9)))
    for other in ((6, TRAIN_STREAM, 2, 9), (5, 1, 2, 9), (5, TRAIN_STREAM, 3, 9), (5, TRAIN_STREAM, 2, 10)):
        assert not torch.equal(a, spec.apply(x, generator_for(*other)))
    images = (torch.rand(3000, 28, 28) * 255).to(torch.uint8)
    assert torch.equal(corrupt_images(images, spec, 0, 2), corrupt_images(images, spec, 0, 2))
    assert not torch.equal(corrupt_images(images, spec, 0, 2), corrupt_images(images, spec, 0, 1))


@pytest.mark.parametrize("text, message", [
    ("gauss:0.3", "unknown noise"), ("gaussian", "needs a number"), ("gaussian:x", "needs a number"),
    ("gaussian:-1", "invalid noise level"), ("salt-pepper:1.5", "invalid noise level"), ("mask:0", "invalid"),
])
def test_bad_noise_options_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(overrides={"noise": text})


def test_noise_is_refused_for_a_vae() -> None:
    with pytest.raises(ConfigError, match="plain autoencoders"):
        resolve(overrides={"noise": "gaussian:0.3", "model": "vae"})
    assert resolve(overrides={"noise": "Gaussian:0.3"}).noise == "Gaussian:0.3"


DENOISE = dict(model="dense", width=0.25, latent=8, train_limit=800, threads=1, report=False, loss="mse",
               noise="gaussian:0.3", epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def bundle(data_root):
    return load_dataset("fashion-mnist", val_fraction=0.1, seed=0, train_limit=800)




def test_denoising_resume_equals_uninterrupted_and_the_noise_is_used(tmp_path, bundle) -> None:
    cfg = resolve(overrides=DENOISE)
    straight, parted = straight_and_resumed(cfg, bundle, tmp_path)
    a, b = model_weights(straight.last), model_weights(parted.last)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k

    clean = Run(tmp_path / "clean")
    clean.path.mkdir()
    Trainer(resolve(overrides=dict(DENOISE, noise=None)), clean, bundle=bundle, progress=False).fit()
    c = model_weights(clean.last)
    assert any(not torch.allclose(a[k], c[k], atol=1e-4) for k in a)  # the noise changed what was learned
