"""VAE models and their loss: a hand-checked KL and likelihood, the reparameterisation, the interface, the options.

Pure unit tests (they run without the data) except the two that ask for ``data_root``.
"""

from __future__ import annotations

import math

import pytest
import torch

from aelab.config import resolve
from aelab.errors import ConfigError
from aelab.models import VAE, VAEOutput, build_model, inference_copy, kl_per_dim
from aelab.training import make_loss


def test_kl_per_dimension_by_hand():
    """KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - ln s^2), worked out for three known posteriors."""
    mean = torch.tensor([[1.0, 0.0, -2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)]])
    kl = kl_per_dim(mean, logvar)
    by_hand = [0.5 * (1 + 1 - 1 - 0),                      # mean 1, variance 1: 0.5
               0.5 * (0 + 4 - 1 - math.log(4)),            # variance 4: 0.80685
               0.5 * (4 + 0.25 - 1 - math.log(0.25))]      # mean -2, variance 1/4: 2.31815
    assert kl[0].tolist() == pytest.approx(by_hand, abs=1e-6)
    assert by_hand[1] == pytest.approx(0.806853, abs=1e-6)
    assert float(kl_per_dim(torch.zeros(1, 4), torch.zeros(1, 4)).sum()) == 0.0  # the prior itself: no KL


def test_likelihoods_by_hand():
    """Bernoulli: -BCE summed over the 784 pixels; Gaussian with a fixed sigma: the Normal log-density summed."""
    logits = torch.zeros(1, 1, 28, 28)  # p = 0.5 everywhere
    x = torch.ones(1, 1, 28, 28)
    bern = build_model("vae-dense", 2)
    assert float(bern.log_likelihood(logits, x)) == pytest.approx(784 * math.log(0.5), rel=1e-6)
    gauss = build_model("vae-dense", 2, likelihood="gaussian", sigma=0.5)
    per_pixel = -0.5 * ((1 - 0.5) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)   # -0.725791
    assert float(gauss.log_likelihood(logits, x)) == pytest.approx(784 * per_pixel, rel=1e-6)
    assert gauss.pixel_sigma() == pytest.approx(0.5) and bern.pixel_sigma() is None
    learned = build_model("vae-dense", 2, likelihood="gaussian")
    assert learned.log_sigma is not None and learned.log_sigma.requires_grad
    assert "log_sigma" in dict(learned.named_parameters())


def test_loss_is_negative_elbo_with_beta_warmup_and_free_bits():
    torch.manual_seed(0)
    model = build_model("vae-dense", 3, width=0.1)
    x = torch.rand(5, 1, 28, 28)
    out = VAEOutput(torch.randn(5, 1, 28, 28), torch.randn(5, 3), torch.randn(5, 3))
    recon = -model.log_likelihood(out.logits, x).mean()
    kl = kl_per_dim(out.mean, out.logvar)

    loss = make_loss(resolve(overrides=dict(model="vae-dense", beta=2.0, kl_warmup=4)), model)
    assert float(loss(out, x, epoch=None)) == pytest.approx(float(recon + 2.0 * kl.sum(1).mean()), rel=1e-5)
    assert float(loss(out, x, epoch=1.0)) == pytest.approx(float(recon + 0.5 * kl.sum(1).mean()), rel=1e-5)
    assert float(loss(out, x, epoch=0.0)) == pytest.approx(float(recon), rel=1e-5)
    assert loss.kl_weight(9.0) == 2.0
    free = make_loss(resolve(overrides=dict(model="vae-dense", free_bits=0.5)), model)
    assert float(free(out, x)) == pytest.approx(float(recon + kl.mean(0).clamp(min=0.5).sum()), rel=1e-5)
    with pytest.raises(TypeError, match="VAEOutput"):
        loss(out.logits, x)


def test_reparameterisation_carries_gradients_to_both_heads():
    torch.manual_seed(0)
    model = build_model("vae", 4, width=0.25).train()
    x = torch.rand(6, 1, 28, 28)
    out = model(x)
    assert isinstance(out, VAEOutput) and out.logits.shape == (6, 1, 28, 28) and out.mean.shape == (6, 4)
    make_loss(resolve(overrides=dict(model="vae")), model)(out, x).backward()
    assert float(model.logvar_head.weight.grad.abs().sum()) > 0
    assert float(model.encoder[-1].weight.grad.abs().sum()) > 0
    # a sample is mean + std * eps: with a fixed generator it is reproducible, and its spread is the std
    mean, logvar = torch.zeros(20000, 2), torch.full((20000, 2), math.log(0.09))
    z = VAE.sample_posterior(mean, logvar, torch.Generator().manual_seed(1))
    assert z.std(0).tolist() == pytest.approx([0.3, 0.3], abs=0.01)
    assert torch.equal(z, VAE.sample_posterior(mean, logvar, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("name", ["vae", "vae-dense"])
def test_code_is_the_posterior_mean_and_the_encoder_gives_it(name):
    torch.manual_seed(0)
    model = build_model(name, 5, width=0.25).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        mean, logvar = model.posterior(x)
        assert torch.equal(model.encode(x), mean)
        assert torch.equal(model.encoder(x), mean)          # what export ships: the mean encoder
        assert torch.allclose(model(x), model.decode(mean))  # eval mode: the reconstruction of the mean
        assert not torch.allclose(logvar, mean)
    assert model.hparams["model"] == name and model.hparams["likelihood"] == "bernoulli"


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown likelihood"):
        build_model("vae", 2, likelihood="poisson")
    with pytest.raises(ConfigError, match="--sigma applies to the gaussian"):
        build_model("vae", 2, sigma=0.1)
    with pytest.raises(ConfigError, match="applies to the VAE models only"):
        resolve(overrides=dict(model="conv", beta=4.0))
    with pytest.raises(ConfigError, match="invalid free-bits"):
        resolve(overrides=dict(model="vae", free_bits=-1.0))
    with pytest.raises(ConfigError, match="invalid sigma"):
        resolve(overrides=dict(model="vae", likelihood="gaussian", sigma=0.0))
    cfg = resolve(overrides=dict(model="vae", likelihood="gaussian", beta=0.5, kl_warmup=2))
    assert cfg.model_kwargs()["likelihood"] == "gaussian" and "likelihood" not in resolve().model_kwargs()
    assert cfg.objective() == "negative ELBO, gaussian (sigma learned), beta 0.5, KL warm-up 2 epochs"
    assert resolve().objective() == "mse+ssim"


@pytest.mark.parametrize("name", ["vae", "vae-dense"])
def test_inference_copy_of_a_vae_is_the_same_function(name, data_root):
    """Batch norm folded, channels-last: the posterior (both heads) and the decoder match the eval model."""
    from aelab.data import load_dataset, to_float

    torch.manual_seed(0)
    model = build_model(name, 8, width=0.5, batch_norm=True)
    x = to_float(load_dataset("fashion-mnist", train_limit=256, test_limit=64).train.images)
    loss = make_loss(resolve(overrides=dict(model=name)), model)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for i in range(0, 256, 64):  # a few steps, so that batch-norm statistics and weights are not trivial
        opt.zero_grad()
        loss(model(x[i:i + 64]), x[i:i + 64]).backward()
        opt.step()
    fast = inference_copy(model)
    model.eval()
    with torch.no_grad():
        m_ref, lv_ref = model.posterior(x[:64])
        m, lv = fast.posterior(x[:64].contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(m, m_ref, rtol=1e-4, atol=1e-4 * float(m_ref.abs().max()))
        torch.testing.assert_close(lv, lv_ref, rtol=1e-4, atol=1e-4 * float(lv_ref.abs().max()))
        assert not any(isinstance(mod, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for mod in fast.modules())
