"""The training objective of a variational autoencoder: the negative ELBO with beta, KL warm-up and free bits.

Per image, in nats: -log p(x|z) for one reparameterised sample z ~ q(z|x), plus w * KL(q(z|x) || N(0, I)) in
closed form, averaged over the batch. The KL weight w is ``beta`` (1: the ELBO itself), ramped linearly from
0 over the first ``kl_warmup`` epochs (counted in fractions of an epoch, so it rises every step; Bowman et al.
2016, Sønderby et al. 2016). With free bits (Kingma et al. 2016) each latent dimension's KL, averaged over the
batch, counts only above ``free_bits`` nats. The likelihood and the KL are the model's own
(``models.vae``); this module only weighs them.
"""

from __future__ import annotations

import torch

from aelab.config import RunConfig
from aelab.errors import ConfigError
from aelab.models import VAE, VAEOutput, kl_per_dim


class VAELoss:
    """``loss(out, x, epoch)`` on a training forward pass's ``VAEOutput``; ``validation(model, x)`` on an
    eval-mode copy of the model, with one posterior sample per image drawn from a fixed seed (the same noise
    every epoch, so that successive validation losses differ by the weights only) and the full KL weight."""

    def __init__(self, cfg: RunConfig, model: VAE):
        if not isinstance(model, VAE):
            raise ConfigError(f"model {cfg.model!r} is not a variational autoencoder; use --model vae or vae-dense")
        self.model = model
        self.beta, self.warmup, self.free_bits, self.seed = cfg.beta, cfg.kl_warmup, cfg.free_bits, cfg.seed

    def kl_weight(self, epoch: float | None) -> float:
        """The KL weight after ``epoch`` epochs (fractional); None: after any warm-up."""
        if epoch is None or not self.warmup:
            return self.beta
        return self.beta * min(1.0, epoch / self.warmup)

    def value(self, model: VAE, out: VAEOutput, x: torch.Tensor, epoch: float | None) -> torch.Tensor:
        if not isinstance(out, VAEOutput):
            raise TypeError("the VAE loss takes the VAEOutput of a training-mode forward pass")
        recon = -model.log_likelihood(out.logits, x).mean()
        kl = kl_per_dim(out.mean.float(), out.logvar.float())
        kl_term = kl.mean(0).clamp(min=self.free_bits).sum() if self.free_bits else kl.sum(1).mean()
        return recon + self.kl_weight(epoch) * kl_term

    def __call__(self, out: VAEOutput, x: torch.Tensor, epoch: float | None = None) -> torch.Tensor:
        return self.value(self.model, out, x, epoch)

    def validation(self, model: VAE, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``model`` on ``x`` (``inputs``: what the encoder sees instead, as ``PixelLoss`` takes it)."""
        mean, logvar = model.posterior(x if inputs is None else inputs)
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        z = model.sample_posterior(mean, logvar, generator=g)
        return self.value(model, VAEOutput(model.decode(z), mean, logvar), x, None)
