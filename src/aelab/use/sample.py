"""Generate images with a trained VAE: samples from the prior, the 2-D manifold, a grid PNG of them.

``sample_to_png(RUN, "grid.png", n=64, seed=0)`` is ``aelab sample RUN -n 64 -o grid.png``: ``n`` codes drawn
from the prior N(0, I) (numpy's seeded generator, so the same seed gives the same codes on any device),
decoded to the decoder's mean images (no pixel noise), laid out in a square-ish grid with 1-pixel white gaps.
``--manifold`` instead decodes a grid over the prior's quantiles (2-D latent only, the classic VAE picture).
A plain autoencoder has no prior to sample from: asking one is a one-line error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aelab.data import display, image_bytes, mosaic, to_uint8
from aelab.errors import OutputError, RunError
from aelab.files import atomic_write_bytes
from aelab.models import prior_codes, prior_quantiles
from aelab.use.api import load

MAX_SAMPLES = 10_000
MANIFOLD_QUANTILES = (0.03, 0.97)


def manifold_codes(steps: int) -> np.ndarray:
    """(steps * steps, 2) codes on a grid of the prior's quantiles (norm.ppf of 3%..97%), row by row from the
    top (largest z2) so that the grid reads like a plot."""
    values = prior_quantiles(steps, *MANIFOLD_QUANTILES)
    return np.stack(np.meshgrid(values, values[::-1]), axis=-1).reshape(-1, 2)


def grid_image(images: np.ndarray, cols: int) -> np.ndarray:
    """Images (n, H, W) grey or (n, C, H, W) colour in [0, 1] -> one uint8 image, ``cols`` per row, 1-pixel white
    gaps."""
    return mosaic(display(to_uint8(images)), cols, fill=255)


@dataclass
class SampleResult:
    path: Path
    n: int
    codes: np.ndarray


def sample_to_png(run: str | os.PathLike, out: str | os.PathLike, n: int = 64, seed: int = 0,
                  manifold: int | None = None, scale: int = 1, which: str = "best") -> SampleResult:
    """Decode ``n`` prior samples (or a ``manifold`` x ``manifold`` grid of prior quantiles, 2-D latent) of the
    VAE in ``run`` into one grid PNG at ``out``."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise OutputError(f"{path}: the grid is a PNG image; give a file name ending in .png")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name ending in .png")
    if not 1 <= n <= MAX_SAMPLES:
        raise OutputError(f"-n {n}: give between 1 and {MAX_SAMPLES:,} samples")
    model = load(run, which=which)
    model.require_vae(f"run {run}")
    if manifold is not None:
        if model.latent != 2:
            raise RunError(f"--manifold needs a 2-D latent; {run} has latent {model.latent} (sample it without "
                           f"--manifold)")
        if not 2 <= manifold <= 100:
            raise OutputError(f"--manifold {manifold}: give between 2 and 100 steps")
        codes = manifold_codes(manifold)
        images, cols = model.decode(codes), manifold
    else:
        codes = prior_codes(n, model.latent, seed)  # as TrainedModel.sample draws them
        images, cols = model.decode(codes), math.ceil(math.sqrt(n))
    atomic_write_bytes(path, image_bytes(grid_image(images, cols), scale=scale))
    return SampleResult(path, len(codes), codes)
