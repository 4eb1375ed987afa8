"""Whole-split passes of a model over uint8 images, in batches on the fast inference copy: codes, pixels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from aelab.data import DataBundle, to_float
from aelab.models import Autoencoder, PCAModel, inference_batch, inference_copy, is_convolutional


def _batched(model: Autoencoder, images: torch.Tensor, fn: Callable[[Autoencoder, torch.Tensor], Any],
             batch: int | None) -> list[Any]:
    """``fn(fast_model, x)`` over uint8 images (n, H, W) or (n, C, H, W) in batches, without gradients, on the fast
    inference copy of ``model`` (``models.inference_copy``: batch norm folded, channels-last); one result per batch."""
    fast = inference_copy(model)
    device = next(model.parameters()).device
    batch = batch or inference_batch(device)
    layout = torch.channels_last if is_convolutional(fast) else torch.contiguous_format
    with torch.inference_mode():
        return [fn(fast, to_float(images[i:i + batch]).to(device).contiguous(memory_format=layout))
                for i in range(0, len(images), batch)]


def encode_all(model: Autoencoder, images: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Latent codes (n, latent) of uint8 images (n, H, W) or (n, C, H, W), float32 on the CPU."""
    if len(images) == 0:
        return torch.empty(0, model.latent)
    return torch.cat(_batched(model, images, lambda m, x: m.encode(x).float().cpu(), batch))


def reconstruct_all(model: Autoencoder, images: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Reconstructed pixels (n, C, H, W) in [0, 1] of uint8 images, float32 on the CPU."""
    return encode_reconstruct_all(model, images, batch)[1]


def encode_reconstruct_all(model: Autoencoder, images: torch.Tensor, batch: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (n, latent) and reconstructed pixels (n, C, H, W) of uint8 images in one pass (CPU, float32)."""
    if len(images) == 0:
        return torch.empty(0, model.latent), torch.empty(0, *model.image_shape)

    def both(m: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = m.encode(x)
        pixels = torch.sigmoid(m.decode(z)).float().cpu().contiguous()
        return z.float().cpu(), pixels

    parts = _batched(model, images, both, batch)
    return torch.cat([z for z, _ in parts]), torch.cat([p for _, p in parts])


def fit_pca(bundle: DataBundle, latent: int) -> PCAModel:
    """PCA of ``latent`` components on the training split's pixels (all channels of an image as one vector)."""
    return PCAModel(latent, bundle.shape).fit(bundle.train.images)
