"""Variational autoencoders: ``vae`` (the conv-modified backbone) and ``vae-dense`` (the dense backbone).

A VAE here is a plain model of the same backbone with one more linear head: the backbone's encoder, whose last
layer gives the posterior mean, and a second head beside that last layer giving the log-variance. The decoder is
the plain model's decoder, unchanged. So ``encode(x)`` is the posterior mean, ``model.encoder`` is the mean
encoder (what export ships), and everything built on the ``Autoencoder`` interface works unchanged.

``forward(x)`` returns the decoder's logits of the posterior mean in eval mode (a deterministic
reconstruction, like every model) and, in training mode, a ``VAEOutput`` (logits of one reparameterised
sample z = mean + std * eps, the mean and the log-variance), from which ``training.losses`` builds the loss.

The model's own likelihood terms live here (ARCHITECTURE.md) so that evaluation uses them without the trainer:
``log_likelihood`` (log p(x|z) per image, nats: Bernoulli, or Gaussian with a fixed or learned standard
deviation shared by all pixels), ``kl_per_dim`` (KL(q(z|x) || N(0, I)) per latent dimension, in closed form),
``log_weights`` (log p(x, z) - log q(z|x), the importance weights of the IWAE bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import norm
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from aelab.errors import ConfigError
from aelab.models.conv import conv_modified
from aelab.models.dense import dense
from aelab.models.registry import Autoencoder, register
from aelab.vocabulary import LIKELIHOODS

SIGMA_INIT = 0.1  # starting value of a learned Gaussian standard deviation (pixels in [0, 1])


def prior_codes(n: int, latent: int, seed: int) -> np.ndarray:
    """``n`` codes (n, latent) float32 from the prior N(0, I), from numpy's seeded generator (the same codes for
    a seed on any device)."""
    return np.random.default_rng(seed).standard_normal((n, latent)).astype(np.float32)


def prior_quantiles(steps: int, low: float = 0.03, high: float = 0.97) -> np.ndarray:
    """``steps`` latent values at evenly spaced quantiles of N(0, 1) (norm.ppf), from ``low`` to ``high``: the
    axes of the classic 2-D VAE manifold."""
    return norm.ppf(np.linspace(low, high, steps)).astype(np.float32)


class VAEOutput(NamedTuple):
    """What a VAE's forward pass gives in training mode."""

    logits: torch.Tensor  # (n, C, H, W): the decoder's logits of one posterior sample
    mean: torch.Tensor    # (n, latent): the posterior mean
    logvar: torch.Tensor  # (n, latent): the posterior log-variance


def kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per image and latent dimension, (n, latent), in nats (closed form:
    0.5 * (mean^2 + var - 1 - logvar))."""
    q = Normal(mean, torch.exp(0.5 * logvar), validate_args=False)
    prior = Normal(torch.zeros_like(mean), torch.ones_like(mean), validate_args=False)
    return kl_divergence(q, prior)


class VAE(Autoencoder):
    """A Gaussian-posterior VAE on a plain model's encoder and decoder (see the module docstring)."""

    def __init__(self, base: Autoencoder, hparams: dict[str, Any]):
        super().__init__(base.encoder, base.decoder, hparams)
        head = base.encoder[-1]
        if not isinstance(head, nn.Linear):
            raise TypeError("a VAE backbone's encoder must end in a linear layer (the mean head)")
        self.logvar_head = nn.Linear(head.in_features, head.out_features)
        self.likelihood = str(hparams["likelihood"])
        sigma = hparams.get("sigma")
        # A learned standard deviation is one parameter, log sigma, shared by all pixels (a "calibrated decoder",
        # Rybkin et al. 2021); a fixed one is a constant.
        self.log_sigma = nn.Parameter(torch.tensor(math.log(SIGMA_INIT))) \
            if self.likelihood == "gaussian" and sigma is None else None
        self.fixed_log_sigma = math.log(sigma) if sigma is not None else 0.0

    # ------------------------------------------------------------------------------------------ posterior
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x), each (n, latent)."""
        h = x
        for layer in list(self.encoder)[:-1]:
            h = layer(h)
        return self.encoder[-1](h), self.logvar_head(h)

    @staticmethod
    def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I) (the reparameterisation trick)."""
        eps = torch.randn_like(mean) if generator is None else torch.randn(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)  # randn_like: torch.compile-able
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> Any:
        mean, logvar = self.posterior(x)
        if not self.training:
            return self.decoder(mean)
        return VAEOutput(self.decoder(self.sample_posterior(mean, logvar)), mean, logvar)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes drawn from the prior N(0, I), on the model's device."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent, generator=generator, device=device)

    # ------------------------------------------------------------------------------------------ likelihood
    def pixel_sigma(self) -> float | None:
        """The Gaussian likelihood's standard deviation (None for Bernoulli)."""
        if self.likelihood != "gaussian":
            return None
        return float(torch.exp(self.log_sigma.detach())) if self.log_sigma is not None else math.exp(
            self.fixed_log_sigma)

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image in nats, (n,), summed over the 784 pixels; ``logits`` from ``decode(z)``.

        Bernoulli: sum of x log p + (1 - x) log(1 - p) with p = sigmoid(logits) (the negative BCE; for grey
        pixels a cross-entropy, not a probability of the image). Gaussian: N(x; sigmoid(logits), sigma^2), a
        density over [0, 1]^784.
        """
        logits = logits.float().reshape(len(logits), -1)
        x = x.float().reshape(len(x), -1)
        if self.likelihood == "bernoulli":
            return Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(1)
        log_sigma = self.log_sigma if self.log_sigma is not None else torch.tensor(self.fixed_log_sigma)
        scale = torch.exp(log_sigma.to(logits.device)).expand_as(logits)
        return Normal(torch.sigmoid(logits), scale, validate_args=False).log_prob(x).sum(1)

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                    decode_batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x, z_i) - log q(z_i|x), log p(x|z_i)) for ``k`` posterior samples z_i of each image, each
        (n, k), in nats.

        ``logsumexp(w, 1) - log k`` is the IWAE bound (Burda et al. 2016); ``w.mean(1)`` a k-sample ELBO. The
        n * k samples are decoded about ``decode_batch`` at a time, so memory stays bounded for any k.
        """
        mean, logvar = self.posterior(x)
        mean, logvar = mean.float(), logvar.float()
        q = Normal(mean, torch.exp(0.5 * logvar), validate_args=False)
        prior = Normal(torch.zeros_like(mean), torch.ones_like(mean), validate_args=False)
        n = len(x)
        chunk = max(1, decode_batch // max(n, 1))
        weights, lls = [], []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.randn((m, *mean.shape), generator=generator, device=mean.device)
            z = mean + q.scale * eps                                   # (m, n, latent)
            logits = self.decode(z.reshape(m * n, -1))
            ll = self.log_likelihood(logits, x.repeat(m, 1, 1, 1)).reshape(m, n)
            lls.append(ll)
            weights.append(ll + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
        return torch.cat(weights).T.contiguous(), torch.cat(lls).T.contiguous()


def check_likelihood(likelihood: str, sigma: float | None) -> None:
    if likelihood not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {likelihood!r}; choose one of: {', '.join(LIKELIHOODS)}")
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"invalid sigma {sigma!r}; use --sigma > 0 (e.g. 0.1), or leave it out to learn it")
    if sigma is not None and likelihood != "gaussian":
        raise ConfigError("--sigma applies to the gaussian likelihood only; drop it or use --likelihood gaussian")


@register("vae", "variational autoencoder on the conv-modified backbone (posterior mean as the code)")
def vae(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.1, batch_norm: bool = True,
        likelihood: str = "bernoulli", sigma: float | None = None, shape: Sequence[int] | None = None) -> VAE:
    check_likelihood(likelihood, sigma)
    base = conv_modified(latent, width=width, activation=activation, dropout=dropout, batch_norm=batch_norm,
                         shape=shape)
    return VAE(base, dict(base.hparams, model="vae", likelihood=likelihood, sigma=sigma))


@register("vae-dense", "variational autoencoder on the dense backbone (posterior mean as the code)")
def vae_dense(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
              batch_norm: bool = False, likelihood: str = "bernoulli", sigma: float | None = None,
              shape: Sequence[int] | None = None) -> VAE:
    check_likelihood(likelihood, sigma)
    base = dense(latent, width=width, activation=activation, dropout=dropout, batch_norm=batch_norm, shape=shape)
    return VAE(base, dict(base.hparams, model="vae-dense", likelihood=likelihood, sigma=sigma))
