"""The dense family: a fully connected autoencoder, pixels-512-256-latent, mirrored (784 pixels for 28x28 grey)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from aelab.models.layers import Reshape, act, channels, drop, image_shape, norm1d, shape_hparams
from aelab.models.registry import Autoencoder, register


@register("dense", "fully connected 784-512-256-latent, mirrored (any image size: C*H*W inputs)")
def dense(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
          batch_norm: bool = False, shape: Sequence[int] | None = None) -> Autoencoder:
    c, h, w = image_shape(shape)
    pixels = c * h * w
    h1, h2 = channels(512, width), channels(256, width)
    enc = nn.Sequential(
        nn.Flatten(),
        nn.Linear(pixels, h1), *norm1d(h1, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h1, h2), *norm1d(h2, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h2, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, h2), *norm1d(h2, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h2, h1), *norm1d(h1, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h1, pixels), Reshape(c, h, w),
    )
    return Autoencoder(enc, dec, dict(model="dense", latent=latent, width=width, activation=activation,
                                      dropout=dropout, batch_norm=batch_norm, **shape_hparams((c, h, w))))
