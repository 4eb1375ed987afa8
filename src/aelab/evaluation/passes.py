"""Passes of a model over a split's uint8 images, in batches on the fast inference copy: codes, pixels, metrics.

The images are a tensor in memory or a store read from disk (``data.stream``); either way a pass holds one
chunk of pixels at a time (``chunk_images``), so that the memory of an evaluation grows with the chunk, the
model and the per-image results, not with the images: ``reconstruction_pass`` keeps codes and per-image
metrics, and the reconstructions only when asked (the report reuses them for a small test split). Results go
into arrays made before the first chunk: small results kept from chunk to chunk between the chunks' large
temporary tensors kept the C heap from shrinking (measured: 10,000 test images of 128x128, +1.9 GB resident
after the pass with a list of per-chunk results, +0.4 GB with the arrays made first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aelab.data import DataBundle, to_float
from aelab.data.stream import ImageStore
from aelab.evaluation.cache import digest
from aelab.evaluation.metrics import reconstruction_metrics
from aelab.models import Autoencoder, PCAModel, inference_batch, inference_copy, is_convolutional

Images = torch.Tensor | ImageStore
CHUNK_IMAGES = 2048        # images per step of a pass at most (a multiple of the CPU inference batch)
CHUNK_BYTES = 16 << 20     # float32 pixels per step of a pass at most (SSIM holds ~16x that)
KEEP_BYTES = 256 << 20     # reconstructions an evaluation keeps for the report, at most (float32, both models)


def chunk_images(shape: tuple[int, ...]) -> int:
    """Images per step of a pass over images of ``shape`` (C, H, W): ``CHUNK_IMAGES``, fewer for large images."""
    return max(1, min(CHUNK_IMAGES, CHUNK_BYTES // (4 * int(np.prod(shape)))))


def keeps_reconstructions(n: int, shape: tuple[int, ...]) -> bool:
    """Whether an evaluation of ``n`` test images of ``shape`` keeps both models' reconstructions (``KEEP_BYTES``)."""
    return 2 * 4 * n * int(np.prod(shape)) <= KEEP_BYTES


def _runner(model: Autoencoder, batch: int | None) -> Callable[[torch.Tensor, Callable[..., Any]], list[Any]]:
    """``run(uint8 images, fn)``: ``fn(fast_model, x)`` over the images in batches, without gradients, on the fast
    inference copy of ``model`` (``models.inference_copy``: batch norm folded, channels-last); one result per
    batch. The copy is made once for every call of ``run``."""
    fast = inference_copy(model)
    device = next(model.parameters()).device
    size = batch or inference_batch(device)
    layout = torch.channels_last if is_convolutional(fast) else torch.contiguous_format

    def run(images: torch.Tensor, fn: Callable[..., Any]) -> list[Any]:
        with torch.inference_mode():
            return [fn(fast, to_float(images[i:i + size]).to(device).contiguous(memory_format=layout))
                    for i in range(0, len(images), size)]
    return run


def _chunks(images: Images, step: int) -> list[slice]:
    return [slice(i, min(len(images), i + step)) for i in range(0, len(images), step)]


def encode_all(model: Autoencoder, images: Images, batch: int | None = None) -> torch.Tensor:
    """Latent codes (n, latent) of uint8 images (n, H, W) or (n, C, H, W), float32 on the CPU."""
    if len(images) == 0:
        return torch.empty(0, model.latent)
    run = _runner(model, batch)
    codes = torch.empty(len(images), model.latent)
    for part in _chunks(images, chunk_images(model.image_shape)):
        codes[part] = torch.cat(run(images[part], lambda m, x: m.encode(x).float().cpu()))
    return codes


def reconstruct_all(model: Autoencoder, images: Images, batch: int | None = None) -> torch.Tensor:
    """Reconstructed pixels (n, C, H, W) in [0, 1] of uint8 images, float32 on the CPU."""
    return encode_reconstruct_all(model, images, batch)[1]


def _both(m: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = m.encode(x)
    return z.float().cpu(), torch.sigmoid(m.decode(z)).float().cpu().contiguous()


def encode_reconstruct_all(model: Autoencoder, images: Images, batch: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (n, latent) and reconstructed pixels (n, C, H, W) of uint8 images in one pass (CPU, float32)."""
    if len(images) == 0:
        return torch.empty(0, model.latent), torch.empty(0, *model.image_shape)
    run = _runner(model, batch)
    parts = [p for part in _chunks(images, chunk_images(model.image_shape)) for p in run(images[part], _both)]
    return torch.cat([z for z, _ in parts]), torch.cat([p for _, p in parts])


@dataclass
class SplitPass:
    """A model over a split: codes, per-image reconstruction metrics, and the reconstructions when kept."""

    codes: torch.Tensor                 # (n, latent) float32
    metrics: dict[str, np.ndarray]      # per image: ssim, ssim7, psnr, mse, bce (``metrics.reconstruction_metrics``)
    recon: torch.Tensor | None = None   # (n, C, H, W) float32 in [0, 1], with ``keep``


def reconstruction_pass(model: Autoencoder | PCAModel, images: Images, keep: bool = True, metrics: bool = True
                        ) -> SplitPass:
    """Codes and per-image metrics of ``model`` (an autoencoder, on its fast inference copy, or the PCA baseline)
    over uint8 ``images``, a chunk at a time (``chunk_images``); ``keep``: the reconstructions too; ``metrics``
    False: no metrics (empty arrays)."""
    shape = model.shape if isinstance(model, PCAModel) else model.image_shape
    run = None if isinstance(model, PCAModel) else _runner(model, None)
    n = len(images)
    codes = torch.empty(n, model.latent)
    kept = torch.empty(n, *shape) if keep else None
    per_image = {k: np.empty(n, np.float32) for k in ("ssim", "ssim7", "psnr", "mse", "bce")} if metrics else {}
    for part in _chunks(images, chunk_images(shape)):
        u8 = images[part]
        if isinstance(model, PCAModel):
            z = model.encode(u8)
            recon = model.decode(z)
        else:
            assert run is not None
            outs = run(u8, _both)
            z, recon = torch.cat([a for a, _ in outs]), torch.cat([b for _, b in outs])
        codes[part] = z
        if metrics:
            for key, v in reconstruction_metrics(recon, to_float(u8)).items():
                per_image[key][part] = v
        if kept is not None:
            kept[part] = recon
    return SplitPass(codes=codes, metrics=per_image, recon=kept)


def pca_codes(pca: PCAModel, images: Images) -> np.ndarray:
    """PCA's codes (n, latent) of uint8 images, a chunk at a time."""
    codes = np.empty((len(images), pca.latent), np.float32)
    for part in _chunks(images, chunk_images(pca.shape)):
        codes[part] = pca.encode(images[part]).numpy()
    return codes


class PixelRows:
    """uint8 images as the float32 pixel rows (n, C*H*W) in [0, 1] a metric samples: ``rows[idx]`` reads only
    those images (``metrics.latent_trustworthiness`` takes 2,000 of them, not the whole split)."""

    def __init__(self, images: Images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: Any) -> np.ndarray:
        x = self.images[idx]
        return x.reshape(len(x), -1).numpy().astype(np.float32) / 255.0


def subset(images: Images, idx: np.ndarray) -> Images:
    """Images ``idx`` of a split: gathered from a tensor (as before), a view of a store (read when used)."""
    return images.subset(idx) if isinstance(images, ImageStore) else images[idx]


def images_digest(images: Images, labels: torch.Tensor) -> str:
    """``evaluation.cache.digest(images, labels)``, reading a store a chunk at a time: the same digest."""
    if not isinstance(images, ImageStore):
        return digest(images, labels)
    h = hashlib.sha256()
    h.update(f"000|torch.uint8|{tuple(images.shape)}|".encode())
    for part in _chunks(images, chunk_images(images.image_shape)):
        h.update(images[part].numpy().data)
    y = labels.detach().cpu().contiguous()
    h.update(f"001|{y.dtype}|{tuple(y.shape)}|".encode())
    h.update(y.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def fit_pca(bundle: DataBundle, latent: int, seed: int = 0) -> PCAModel:
    """PCA of ``latent`` components on the training split's pixels (all channels of an image as one vector):
    all of them, or a seeded sample for large images (``models.pca``)."""
    return PCAModel(latent, bundle.shape).fit(bundle.train.images, seed=seed)
