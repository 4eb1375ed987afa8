"""The fixed validation images a tracked training measures after every epoch: their mean SSIM, and a grid of some
of them beside their reconstructions.

The trainer's validation pass computes the loss only; the SSIM of the whole validation split would cost a second
pass over it every epoch. So a tracked run measures the first images of the validation split (a seeded random
sample: the split is drawn at random) with the headline SSIM (``evaluation.metrics.ssim_per_image``), and shows the
first ``GRID_IMAGES`` of them: always the same images, so the grid shows the model learning. The sample holds one
image per ``SHARE`` training images (between ``GRID_IMAGES`` and ``SSIM_IMAGES``): its reconstruction, the whole
cost, stays under ~1% of an epoch's work (an inference pass is about a third of a training step's per image).
"""

from __future__ import annotations

import numpy as np
import torch

from aelab.data import to_float
from aelab.data.pixels import mosaic, side_by_side
from aelab.data.stream import ImageStore, rows
from aelab.evaluation import reconstruct_all
from aelab.evaluation.metrics import ssim_per_image
from aelab.models import Autoencoder

SSIM_IMAGES = 512  # validation images whose mean SSIM is logged each epoch ("val/ssim"), at most
SHARE = 100        # training images per image of the sample
GRID_IMAGES = 16   # of them, shown beside their reconstructions ("val/reconstructions")
GRID_COLUMNS = 4   # (original | reconstruction) pairs per row
MIN_TILE = 56      # images smaller than this are enlarged by a whole factor (nearest neighbour) to be seen


class ValidationSample:
    """The first images of a validation split (uint8, as the split holds them): one per ``SHARE`` of the
    ``train`` training images, between ``GRID_IMAGES`` and ``SSIM_IMAGES``."""

    def __init__(self, images: torch.Tensor | ImageStore, train: int):
        n = min(SSIM_IMAGES, max(GRID_IMAGES, train // SHARE))
        self.images = rows(images, 0, min(n, len(images)))
        self.target = to_float(self.images) if len(self.images) else None  # read once (a store: 512 images)

    def __len__(self) -> int:
        return len(self.images)

    def measure(self, model: Autoencoder) -> tuple[float, np.ndarray]:
        """(mean SSIM of ``model``'s reconstructions of the sample, the grid of the first images beside theirs)."""
        assert self.target is not None, "no validation images to measure"
        recon = reconstruct_all(model, self.images)
        ssim = float(ssim_per_image(recon, self.target).mean())
        return ssim, grid(self.target[:GRID_IMAGES], recon[:GRID_IMAGES])


def grid(originals: torch.Tensor, reconstructions: torch.Tensor) -> np.ndarray:
    """uint8 (H, W) grey or (H, W, 3) colour: each original beside its reconstruction, ``GRID_COLUMNS`` pairs a row,
    enlarged to at least ``MIN_TILE`` pixels a side."""
    pairs = side_by_side([originals, reconstructions])
    out = mosaic(pairs, cols=min(GRID_COLUMNS, len(pairs)), fill=255, gap=3)
    scale = max(1, MIN_TILE // max(originals.shape[-2:]))
    return np.ascontiguousarray(np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)) if scale > 1 else out
