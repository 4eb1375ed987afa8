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

from aelab.allocator import keep_freed_memory
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


class BatchedInference:
    """A model made ready to run over many images: the one place the inference preamble lives.

    ``fast`` is the inference copy of ``model`` (``models.inference_copy``: batch norm folded, channels-last for a
    convolutional model), made once; ``batch`` the images per forward pass on the model's ``device``
    (``models.inference_batch`` for the model's ``image_shape``: large images take fewer); ``map(items, fn)`` runs
    ``fn(fast, x)`` over ``items`` in batches without gradients (``torch.inference_mode``), each batch sliced from
    ``items`` (a tensor, or a store read from disk: ``data.stream``, read one batch at a time) and converted by
    ``inputs``. The evaluation passes, the trainer's validation, the report and ``TrainedModel`` all go through it.
    """

    def __init__(self, model: Autoencoder, batch: int | None = None):
        keep_freed_memory()  # each batch's tensors without page faults (allocator.py)
        self.fast = inference_copy(model)
        self.device = next(model.parameters()).device
        self.batch = batch or inference_batch(self.device, model.image_shape)
        self.layout = torch.channels_last if is_convolutional(self.fast) else torch.contiguous_format

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as ``fast`` takes it, on its device: uint8 images (n, H, W) / (n, C, H, W) -> float32 pixels
        (n, C, H, W) in [0, 1] (``data.to_float``, after the move: a GPU gets the uint8 bytes), float pixels or
        codes as float32; images (4-D) in the copy's memory layout."""
        x = x.to(self.device, non_blocking=True)
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        return x.contiguous(memory_format=self.layout) if x.dim() == 4 else x

    def map(self, items: Images, fn: Callable[..., Any], *aligned: torch.Tensor, batch: int | None = None,
            prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[Any]:
        """``[fn(fast, x, *a) for each batch]``: ``x`` a batch of ``items`` (``prepare``, when given, applied to the
        slice first, on the CPU) and ``a`` the same rows of each of ``aligned``, all through ``inputs``; ``batch``
        overrides the batch size. Nothing for no items."""
        size = batch or self.batch
        out = []
        with torch.inference_mode():
            for i in range(0, len(items), size):
                x = items[i:i + size]
                x = self.inputs(prepare(x) if prepare is not None else x)
                out.append(fn(self.fast, x, *(self.inputs(a[i:i + size]) for a in aligned)))
        return out


def _chunks(images: Images, step: int) -> list[slice]:
    return [slice(i, min(len(images), i + step)) for i in range(0, len(images), step)]


def encode_all(model: Autoencoder, images: Images, batch: int | None = None) -> torch.Tensor:
    """Latent codes (n, latent) of uint8 images (n, H, W) or (n, C, H, W), float32 on the CPU."""
    if len(images) == 0:
        return torch.empty(0, model.latent)
    run = BatchedInference(model, batch)
    codes = torch.empty(len(images), model.latent)
    for part in _chunks(images, chunk_images(model.image_shape)):
        codes[part] = torch.cat(run.map(images[part], lambda m, x: m.encode(x).float().cpu()))
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
    run = BatchedInference(model, batch)
    parts = [p for part in _chunks(images, chunk_images(model.image_shape)) for p in run.map(images[part], _both)]
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
    run = None if isinstance(model, PCAModel) else BatchedInference(model)
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
            outs = run.map(u8, _both)
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
