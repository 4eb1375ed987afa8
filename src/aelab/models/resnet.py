"""The residual family that scales with the image: ``resnet`` (deterministic) and ``resnet-vae`` (variational).

In the spirit of the encoder and decoder of diffusers' ``AutoencoderKL`` (pre-activation residual blocks with
GroupNorm and SiLU, stride-2 convolutions down, a mirrored decoder), sized for a CPU:

- encoder: a 3x3 stem convolution at full size, then per level a stride-2 3x3 convolution (the channels change
  here) and residual block(s) (GroupNorm, activation, conv, twice, plus the input), halving until the map is at
  most 8 px a side (or ``levels`` times); a final GroupNorm and activation, flatten, one linear layer to the code;
- decoder: a linear layer to the map, then per level residual block(s) and a 4x4 stride-2 transposed convolution
  (x2), a final GroupNorm, activation and 3x3 convolution to the image's channels (logits, like every model).

Unlike diffusers there is no residual block at full size (the costliest level: without it the family trains
~1.5x faster at 64 px) and the last one runs at the map's size, where diffusers has its mid block. The channels
(``level_channels``) are 32 at the first level of at most 32 px, doubling per level below it up to a cap (256)
and halving above it (down to 16), so a 64x64 image costs ~2x a 28x28 one per image, not ~7x, and the map
before the code is at most 8x8 x the cap: the dense layers stay small at any size.

Any (C, H, W) works: sides that 2**levels does not divide are zero-padded at the bottom and right on the way in
(``PadTo``) and the output is cropped back (``CropTo``); ``layers.padding_note_of(model)`` says so in words.
GroupNorm has no running statistics: it cannot be folded into a convolution, and the inference copy keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.models.layers import (
    ConvTranspose2d,
    CropTo,
    PadTo,
    Reshape,
    act,
    channels,
    drop,
    image_shape,
    padded,
    shape_hparams,
)
from aelab.models.registry import ACTIVATIONS, Autoencoder, register
from aelab.models.vae import VAE, check_likelihood

ACTIVATION = "silu"   # the family's default activation (diffusers' AutoencoderKL uses SiLU too)
BASE = 32             # channels of the first level at width 1; they double per level
MAX_CHANNELS = 256    # the cap of the channels per level, at width 1
MIN_CHANNELS = 16     # the fewest channels of a level above FULL px, at width 1
FULL = 32             # the first level whose map is at most this many px a side has BASE channels
MAX_MAP = 8           # the automatic depth halves until the map is at most this many pixels a side
MAX_LEVELS = 8        # 2**8 = 256: enough halvings for 2,048 px sides
EPS = 1e-6            # GroupNorm epsilon (as diffusers)
GROUP_SIZE = 4        # channels per GroupNorm group at most 32 groups (see ``groups``)


def auto_levels(shape: Sequence[int] | None) -> int:
    """The number of halvings that takes the longer side of ``shape`` to at most 8 px (at least 1)."""
    _, h, w = image_shape(shape)
    side, levels = max(h, w), 1
    while -(-side // 2 ** levels) > MAX_MAP:
        levels += 1
    return levels


def groups(c: int) -> int:
    """GroupNorm groups for ``c`` channels: the largest divisor of ``c`` that is at most 32 and leaves groups of at
    least 4 channels (1 group below 8 channels)."""
    limit = max(1, min(32, c // GROUP_SIZE))
    return max(d for d in range(1, limit + 1) if c % d == 0)


def _act(name: str) -> nn.Module:
    return act(name)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))) at ``c`` channels (diffusers' ResnetBlock2D, without the time
    embedding; the channel changes happen in the down- and up-sampling convolutions)."""

    def __init__(self, c: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups(c), c, eps=EPS), _act(activation), nn.Conv2d(c, c, 3, padding=1),
            nn.GroupNorm(groups(c), c, eps=EPS), _act(activation), nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def upsample(cin: int, cout: int) -> nn.Module:
    """x2 from ``cin`` to ``cout`` channels: a 4x4 stride-2 transposed convolution (the CPU-fast one of
    ``layers``). In a quick measure (batch 64, 28 and 64 px, CPU) it trained the family 14-17% faster than
    nearest-neighbour x2 plus a 3x3 convolution (what diffusers uses), and learned as well in a short run."""
    return ConvTranspose2d(cin, cout, 4, stride=2, padding=1)


def level_channels(side: int, levels: int, width: float, max_channels: int) -> list[int]:
    """Channels at each size, full size (the stem) first, ``levels + 1`` entries (the last is the map's), for
    images whose padded longer side is ``side``.

    ``BASE`` channels at the first size of at most ``FULL`` px, doubling per level below it and halving per level
    above it (down to ``MIN_CHANNELS``), all times ``width``, capped at ``max_channels`` x ``width``. A level's
    cost (pixels x channels^2) is then about the same at any image size: 28x28 gives 32, 64, 128 (at 28, 14, 7
    px), 64x64 gives 16, 32, 64, 128 (at 64, 32, 16, 8 px).
    """
    above = sum(1 for i in range(levels + 1) if side / 2 ** i > FULL)   # levels whose map is larger than FULL px
    cap = channels(max_channels, width)
    return [min(cap, channels(max(MIN_CHANNELS, BASE * 2.0 ** (i - above)), width)) for i in range(levels + 1)]


def _check(shape: tuple[int, int, int], levels: int, activation: str, blocks: int, max_channels: int,
           batch_norm: bool | None) -> None:
    if activation not in ACTIVATIONS:
        names = ", ".join(ACTIVATIONS)
        raise ConfigError(f"unknown activation {activation!r}; choose one of: {names}")
    if not (isinstance(levels, int) and 1 <= levels <= MAX_LEVELS):
        raise ConfigError(f"invalid levels {levels!r}; use --levels between 1 and {MAX_LEVELS} (or leave it out: "
                          f"halve until the map is at most {MAX_MAP} px)")
    if max(shape[1:]) < 2:
        raise ConfigError(f"{shape[1]}x{shape[2]} images are too small for the resnet models (they halve at least "
                          f"once); use a model of another family (e.g. --model dense)")
    if 2 ** (levels - 1) >= max(shape[1:]):
        raise ConfigError(f"{levels} levels halve {shape[1]}x{shape[2]} images below 1 px; use --levels "
                          f"{(max(shape[1:]) - 1).bit_length()} or fewer (or leave it out)")
    if not (isinstance(blocks, int) and 1 <= blocks <= 8):
        raise ConfigError(f"invalid blocks {blocks!r}; use between 1 and 8 residual blocks per level")
    if not (isinstance(max_channels, int) and 8 <= max_channels <= 1024):
        raise ConfigError(f"invalid max_channels {max_channels!r}; use between 8 and 1024")
    if batch_norm:
        raise ConfigError("the resnet models normalise with GroupNorm; drop --batch-norm")


@register("resnet", "residual blocks with GroupNorm and SiLU, halving until the map is <= 8 px, dense code; "
                    "scales with the image")
def resnet(latent: int, levels: int | None = None, width: float = 1.0, activation: str = ACTIVATION,
           dropout: float = 0.0, blocks: int = 1, max_channels: int = MAX_CHANNELS, batch_norm: bool | None = None,
           shape: Sequence[int] | None = None) -> Autoencoder:
    shape = image_shape(shape)
    levels = auto_levels(shape) if levels is None else levels
    _check(shape, levels, activation, blocks, max_channels, batch_norm)
    c0, h, w = shape
    ph, pw = padded(shape, 2 ** levels)
    bh, bw = ph // 2 ** levels, pw // 2 ** levels
    ch = level_channels(max(ph, pw), levels, width, max_channels)
    pad, crop = ([], []) if (ph, pw) == (h, w) else ([PadTo(ph, pw)], [CropTo(h, w)])

    top = ch[levels]
    enc: list[nn.Module] = [*pad, nn.Conv2d(c0, ch[0], 3, padding=1)]
    for i in range(levels):
        enc.append(nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1))
        enc += [ResBlock(ch[i + 1], activation) for _ in range(blocks)]
    enc += [nn.GroupNorm(groups(top), top, eps=EPS), _act(activation),
            nn.Flatten(), *drop(dropout), nn.Linear(top * bh * bw, latent)]

    dec: list[nn.Module] = [nn.Linear(latent, top * bh * bw), Reshape(top, bh, bw)]
    for i in reversed(range(levels)):
        dec += [ResBlock(ch[i + 1], activation) for _ in range(blocks)]
        dec.append(upsample(ch[i + 1], ch[i]))
    dec += [nn.GroupNorm(groups(ch[0]), ch[0], eps=EPS), _act(activation), nn.Conv2d(ch[0], c0, 3, padding=1), *crop]

    hp = dict(model="resnet", latent=latent, levels=levels, width=width, dropout=dropout)
    if activation != ACTIVATION:
        hp["activation"] = activation
    if blocks != 1:
        hp["blocks"] = blocks
    if max_channels != MAX_CHANNELS:
        hp["max_channels"] = max_channels
    return Autoencoder(nn.Sequential(*enc), nn.Sequential(*dec), dict(hp, **shape_hparams(shape)))


@register("resnet-vae", "variational autoencoder on the resnet backbone (posterior mean as the code)")
def resnet_vae(latent: int, levels: int | None = None, width: float = 1.0, activation: str = ACTIVATION,
               dropout: float = 0.0, blocks: int = 1, max_channels: int = MAX_CHANNELS,
               batch_norm: bool | None = None, likelihood: str = "bernoulli", sigma: float | None = None,
               shape: Sequence[int] | None = None) -> VAE:
    check_likelihood(likelihood, sigma)
    base = resnet(latent, levels=levels, width=width, activation=activation, dropout=dropout, blocks=blocks,
                  max_channels=max_channels, batch_norm=batch_norm, shape=shape)
    return VAE(base, dict(base.hparams, model="resnet-vae", likelihood=likelihood, sigma=sigma))

