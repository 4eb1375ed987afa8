"""Training losses on (logits, target pixels): BCE, MSE, and their SSIM-aware mixes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from aelab.config import RunConfig
from aelab.evaluation.metrics import ssim_per_image


def make_loss(cfg: RunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training objective on (logits, target pixels)."""
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

    return loss
