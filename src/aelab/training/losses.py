"""Training losses: BCE, MSE and their SSIM-aware mixes on (logits, target pixels); a VAE's negative ELBO.

``make_loss(cfg, model)`` gives the objective the trainer calls as ``loss(out, x, epoch)`` on the output of a
training-mode forward pass (logits, or a VAE's ``VAEOutput``; ``epoch``: epochs done, fractional, for a KL
warm-up), and as ``loss.validation(model, x)`` on the eval-mode inference copy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from aelab.config import RunConfig
from aelab.evaluation.metrics import ssim_per_image
from aelab.models import Autoencoder
from aelab.training.vae_loss import VAELoss


class PixelLoss:
    """A plain autoencoder's loss on (logits, target pixels); ``epoch`` is not used."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, epoch: float | None = None) -> torch.Tensor:
        return self.fn(logits.float(), target)

    def validation(self, model: torch.nn.Module, x: torch.Tensor, inputs: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """The loss of ``model`` on ``x``; ``inputs``: what the model sees instead (a denoising run's noisy x)."""
        return self.fn(model(x if inputs is None else inputs).float(), x)


def make_loss(cfg: RunConfig, model: Autoencoder | None = None) -> PixelLoss | VAELoss:
    """The training objective: ``cfg.loss`` on (logits, target pixels), or for a VAE model (``model`` needed)
    its negative ELBO (``training.vae_loss``)."""
    if cfg.is_vae:
        if model is None:
            raise ValueError("the VAE loss is built from its model: make_loss(cfg, model)")
        return VAELoss(cfg, model)  # type: ignore[arg-type]
    base, _, extra = cfg.loss.partition("+")
    w = cfg.ssim_weight

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if base == "bce":
            value = F.binary_cross_entropy_with_logits(logits, target)
            pixels = torch.sigmoid(logits) if extra else None
        else:
            pixels = torch.sigmoid(logits)
            value = F.mse_loss(pixels, target)
        if extra:
            value = value + w * (1.0 - ssim_per_image(pixels, target).mean())
        return value

    return PixelLoss(loss)
