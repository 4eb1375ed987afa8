"""The dense family: a fully connected autoencoder, 784-512-256-latent, mirrored."""

from __future__ import annotations

from torch import nn

from aelab.models.layers import Reshape, act, channels, drop, norm1d
from aelab.models.registry import Autoencoder, register


@register("dense", "fully connected 784-512-256-latent, mirrored")
def dense(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
          batch_norm: bool = False) -> Autoencoder:
    h1, h2 = channels(512, width), channels(256, width)
    enc = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, h1), *norm1d(h1, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h1, h2), *norm1d(h2, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h2, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, h2), *norm1d(h2, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h2, h1), *norm1d(h1, batch_norm), act(activation), *drop(dropout),
        nn.Linear(h1, 784), Reshape(1, 28, 28),
    )
    return Autoencoder(enc, dec, dict(model="dense", latent=latent, width=width, activation=activation,
                                      dropout=dropout, batch_norm=batch_norm))
