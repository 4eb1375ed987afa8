"""The convolutional family: the base model (``conv``) and the modified one (``conv-modified``)."""

from __future__ import annotations

from torch import nn

from aelab.models.layers import ConvTranspose2d, Reshape, act, act_pool, channels, drop, norm1d, norm2d
from aelab.models.registry import Autoencoder, register


@register("conv", "the base model: conv 32-pool-conv 64-pool-conv 128-dense, mirrored with transposed convs")
def conv(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
         batch_norm: bool = False) -> Autoencoder:
    c1, c2, c3 = channels(32, width), channels(64, width), channels(128, width)
    enc = nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), *norm2d(c1, batch_norm), *act_pool(activation),   # 14
        nn.Conv2d(c1, c2, 3, padding=1), *norm2d(c2, batch_norm), *act_pool(activation),  # 7
        nn.Conv2d(c2, c3, 3, padding=1), *norm2d(c3, batch_norm), act(activation),
        nn.Flatten(), *drop(dropout), nn.Linear(c3 * 49, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, c3 * 49), act(activation), *drop(dropout), Reshape(c3, 7, 7),
        ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1),                          # 14
        *norm2d(c2, batch_norm), act(activation),
        ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),                          # 28
        *norm2d(c1, batch_norm), act(activation),
        nn.Conv2d(c1, 1, 3, padding=1),
    )
    return Autoencoder(enc, dec, dict(model="conv", latent=latent, width=width, activation=activation,
                                      dropout=dropout, batch_norm=batch_norm))


@register("conv-modified", "batch norm, dropout, strided 28-14-7 path and transposed convs")
def conv_modified(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.1,
                  batch_norm: bool = True) -> Autoencoder:
    c1, c2, c3 = channels(32, width), channels(64, width), channels(128, width)

    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm),
                *norm2d(cout, batch_norm), act(activation)]

    def up(cin: int, cout: int) -> list[nn.Module]:
        return [ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=not batch_norm),
                *norm2d(cout, batch_norm), act(activation)]

    enc = nn.Sequential(
        *block(1, c1), *block(c1, c1, 2),        # 28 -> 14
        *block(c1, c2), *block(c2, c2, 2),       # 14 -> 7
        *block(c2, c3),
        nn.Flatten(), *drop(dropout), nn.Linear(c3 * 49, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, c3 * 49), *norm1d(c3 * 49, batch_norm), act(activation), Reshape(c3, 7, 7),
        *block(c3, c2), *up(c2, c2),             # 7 -> 14
        *block(c2, c1), *up(c1, c1),             # 14 -> 28
        nn.Conv2d(c1, 1, 3, padding=1),
    )
    return Autoencoder(enc, dec, dict(model="conv-modified", latent=latent, width=width,
                                      activation=activation, dropout=dropout, batch_norm=batch_norm))
