"""The convolutional family: the base model (``conv``) and the modified one (``conv-modified``).

Both halve the image twice (28 -> 14 -> 7 for the built-in data sets) and take any (C, H, W) with C 1 or 3: an
image whose sides 4 does not divide is zero-padded at the bottom and right to the next multiple of 4 on the way
in (``PadTo``), and the decoder's output is cropped back (``CropTo``); ``padding_note`` says so in words.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from aelab.models.layers import (
    ConvTranspose2d,
    CropTo,
    PadTo,
    Reshape,
    act,
    act_pool,
    channels,
    conv_act,
    drop,
    image_shape,
    norm1d,
    norm2d,
    padded,
    shape_hparams,
)
from aelab.models.registry import Autoencoder, register

DOWN = 4  # the down-sampling path halves twice


def padding_note(shape: Sequence[int] | None) -> str | None:
    """What the convolutional models do to images of ``shape`` that 4 does not divide, or None."""
    c, h, w = image_shape(shape)
    ph, pw = padded((c, h, w), DOWN)
    if (ph, pw) == (h, w):
        return None
    return (f"the convolutional models pad {h}x{w} images with zeros to {ph}x{pw} (bottom and right; their path "
            f"halves twice) and crop the output back to {h}x{w}")


def _ends(shape: tuple[int, int, int]) -> tuple[list[nn.Module], list[nn.Module], int, int]:
    """(the encoder's first layers, the decoder's last layers, bottleneck height, width) for ``shape``."""
    _, h, w = shape
    ph, pw = padded(shape, DOWN)
    if (ph, pw) == (h, w):
        return [], [], h // DOWN, w // DOWN
    return [PadTo(ph, pw)], [CropTo(h, w)], ph // DOWN, pw // DOWN


@register("conv", "the base model: conv 32-pool-conv 64-pool-conv 128-dense, mirrored with transposed convs")
def conv(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
         batch_norm: bool = False, shape: Sequence[int] | None = None) -> Autoencoder:
    shape = image_shape(shape)
    pad, crop, bh, bw = _ends(shape)
    c0 = shape[0]
    c1, c2, c3 = channels(32, width), channels(64, width), channels(128, width)
    enc = nn.Sequential(
        *pad,
        nn.Conv2d(c0, c1, 3, padding=1), *norm2d(c1, batch_norm), *act_pool(activation),   # 14
        nn.Conv2d(c1, c2, 3, padding=1), *norm2d(c2, batch_norm), *act_pool(activation),  # 7
        *conv_act(nn.Conv2d, c2, c3, activation, batch_norm, kernel_size=3, padding=1),
        nn.Flatten(), *drop(dropout), nn.Linear(c3 * bh * bw, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, c3 * bh * bw), act(activation), *drop(dropout), Reshape(c3, bh, bw),
        *conv_act(ConvTranspose2d, c3, c2, activation, batch_norm, kernel_size=3, stride=2, padding=1,  # 14
                  output_padding=1),
        *conv_act(ConvTranspose2d, c2, c1, activation, batch_norm, kernel_size=3, stride=2, padding=1,  # 28
                  output_padding=1),
        nn.Conv2d(c1, c0, 3, padding=1), *crop,
    )
    return Autoencoder(enc, dec, dict(model="conv", latent=latent, width=width, activation=activation,
                                      dropout=dropout, batch_norm=batch_norm, **shape_hparams(shape)))


@register("conv-modified", "batch norm, dropout, strided 28-14-7 path and transposed convs")
def conv_modified(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.1,
                  batch_norm: bool = True, shape: Sequence[int] | None = None) -> Autoencoder:
    shape = image_shape(shape)
    pad, crop, bh, bw = _ends(shape)
    c0 = shape[0]
    c1, c2, c3 = channels(32, width), channels(64, width), channels(128, width)

    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm),
                *norm2d(cout, batch_norm), act(activation)]

    def up(cin: int, cout: int) -> list[nn.Module]:
        return [ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=not batch_norm),
                *norm2d(cout, batch_norm), act(activation)]

    enc = nn.Sequential(
        *pad,
        *block(c0, c1), *block(c1, c1, 2),       # 28 -> 14
        *block(c1, c2), *block(c2, c2, 2),       # 14 -> 7
        *block(c2, c3),
        nn.Flatten(), *drop(dropout), nn.Linear(c3 * bh * bw, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, c3 * bh * bw), *norm1d(c3 * bh * bw, batch_norm), act(activation), Reshape(c3, bh, bw),
        *block(c3, c2), *up(c2, c2),             # 7 -> 14
        *block(c2, c1), *up(c1, c1),             # 14 -> 28
        nn.Conv2d(c1, c0, 3, padding=1), *crop,
    )
    return Autoencoder(enc, dec, dict(model="conv-modified", latent=latent, width=width,
                                      activation=activation, dropout=dropout, batch_norm=batch_norm,
                                      **shape_hparams(shape)))
