"""The explorer's model side: a run prepared once at start-up, and the batcher that shares the decoder.

``Explorer(run)`` loads the model once (``aelab.load``), encodes, reconstructs and scores (SSIM, the headline
definition) the run's test split, and makes the 2-D map; everything a hover needs is then a lookup.
``DecodeBatcher`` coalesces the decodes that arrive while one runs into one batch, run off the event loop:
one code takes ~0.9 ms to decode, 16 together ~5 ms (measured on 2 cores, conv-modified, latent 16, one
torch thread), so under load the decoder runs ~3x fewer times and the loop stays free for I/O.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

import aelab
from aelab.data import display, image_bytes, load_dataset, to_float, to_pixels
from aelab.evaluation.metrics import ssim_per_image
from aelab.explorer.checks import ApiError, light_background, read_upload
from aelab.explorer.projection import Projection, project
from aelab.vocabulary import VAE_MODELS


class Explorer:
    """A run made ready to explore: model, test images, their codes, reconstructions, SSIMs and the map."""

    def __init__(self, run: str | os.PathLike, *, projection: str = "pca", threads: int = 1,
                 test_limit: int | None = None):
        self.run = Path(run)
        self.model = aelab.load(run)
        cfg = self.model.config
        bundle = load_dataset(cfg.dataset, **dict(cfg.data_kwargs(), test_limit=test_limit), progress=False)
        self.classes = tuple(bundle.classes)
        self.labels = bundle.test.labels.numpy()
        self.images_u8 = display(bundle.test.images.numpy())  # (n, H, W) grey, (n, H, W, C) colour
        pixels = to_float(bundle.test.images)
        torch.set_num_threads(threads)
        self.codes = self.model.encode_batch(pixels)
        recon = self.model.decode_batch(self.codes)
        # SSIM in chunks of 256: 0.3 s for 10,000 images on one thread, against 1.6 s in one piece (the
        # (n, 5, 28, 28) intermediates stop fitting in cache); float32 is within 4e-6 of the float64 figure
        self.ssim = torch.cat([ssim_per_image(recon[i:i + 256], pixels[i:i + 256])
                               for i in range(0, len(pixels), 256)]).numpy()
        run = self.model.run  # the run folder aelab.load read: it names the file each map is cached in
        self.map: Projection = project(self.codes.numpy(), projection, labels=self.labels,
                                       cache=run.projection if run is not None and not test_limit else None,
                                       seed=0, threads=threads)
        self.recon_u8 = display(to_u8(recon))
        self.flat = pixels.reshape(len(pixels), -1).contiguous()
        self.flat_sq = (self.flat ** 2).sum(1)
        self.codes_sq = (self.codes ** 2).sum(1)
        self.token = f"{abs(hash((str(self.run.resolve()), self.ssim.tobytes()))):x}"[:12]
        self.png_cache: dict[tuple[int, str], bytes] = {}
        hp = self.model.hparams
        self.vae = hp.get("model") in VAE_MODELS
        self.projection_json = json.dumps({
            "method": self.map.method, "description": self.map.describe(), "exact_lift": self.map.exact_lift,
            "x": np.round(self.map.points[:, 0], 5).tolist(), "y": np.round(self.map.points[:, 1], 5).tolist(),
            "labels": self.labels.tolist(), "ssim": np.round(self.ssim, 4).tolist(), "classes": self.classes,
        }, separators=(",", ":")).encode()

    @property
    def latent(self) -> int:
        return self.model.latent

    def class_name(self, label: int) -> str:
        return self.classes[label] if 0 <= label < len(self.classes) else str(label)

    def check_index(self, i: int) -> int:
        if not 0 <= i < len(self.labels):
            raise ApiError(404, f"no test image {i}; indices run 0..{len(self.labels) - 1}")
        return i

    def image_png(self, i: int, kind: str) -> bytes:
        key = (i, kind)
        if key not in self.png_cache:
            self.png_cache[key] = image_bytes((self.images_u8 if kind == "input" else self.recon_u8)[i])
        return self.png_cache[key]

    def point(self, i: int) -> dict[str, Any]:
        label = int(self.labels[i])
        return {"index": i, "label": label, "class": self.class_name(label), "ssim": round(float(self.ssim[i]), 4),
                "code": self.codes[i].tolist(), "xy": self.map.points[i].tolist()}

    def neighbours(self, code: torch.Tensor, flat: torch.Tensor, k: int, exclude: int | None = None
                   ) -> dict[str, list[dict[str, Any]]]:
        """The ``k`` nearest test images to ``code`` in latent space and to ``flat`` (its C*H*W pixels) in pixel
        space."""
        def nearest(space: torch.Tensor, sq: torch.Tensor, q: torch.Tensor) -> list[dict[str, Any]]:
            d2 = sq - 2.0 * (space @ q) + q @ q
            if exclude is not None:
                d2[exclude] = math.inf
            vals, idx = torch.topk(d2, min(k, len(d2) - (exclude is not None)), largest=False)
            return [{"index": int(j), "label": int(self.labels[j]), "class": self.class_name(int(self.labels[j])),
                     "distance": round(math.sqrt(max(float(v), 0.0)), 4)} for v, j in zip(vals, idx, strict=True)]

        return {"latent": nearest(self.codes, self.codes_sq, code), "pixel": nearest(self.flat, self.flat_sq, flat)}

    def encode_upload(self, data: bytes, invert: str) -> dict[str, Any]:
        """An uploaded image file -> its code, map position, reconstruction, SSIM and neighbours."""
        mode = self.model.config.resize if self.model.config is not None else "crop"  # as the run was trained
        image, size = read_upload(data, self.model.image_shape, mode)
        flip = invert == "yes" or (invert == "auto" and light_background(image))
        if flip:
            image = 255 - image
        x = to_pixels(image[None], "the upload", shape=self.model.image_shape)
        code = self.model.encode_batch(x)
        recon = self.model.decode_batch(code)
        return {"code": code[0].tolist(), "xy": self.map.place(code.numpy())[0].tolist(),
                "ssim": round(float(ssim_per_image(recon, x)[0]), 4), "inverted": flip, "size": list(size),
                "input": data_url(image_bytes(image)),
                "reconstruction": data_url(image_bytes(display(to_u8(recon))[0])),
                "neighbours": self.neighbours(code[0], x.reshape(-1), 8)}


class DecodeBatcher:
    """Decodes that arrive while one runs wait and go together as one batch (in a worker thread, off the loop).

    ``await decode(z)`` -> (pixels float32 (k, C, H, W) in [0, 1], uint8 (k, H, W[, C])): the conversion to
    uint8 is done once per batch in the worker too (four torch ops: ~30 us per request when done one by one).
    """

    def __init__(self, model: Any, max_rows: int = 256):
        self.model, self.max_rows = model, max_rows
        self.pending: list[tuple[torch.Tensor, asyncio.Future]] = []
        self.running = False

    async def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((z, fut))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await fut

    def _work(self, z: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        pixels = self.model.decode_batch(z)
        return pixels, display(to_u8(pixels))

    async def _drain(self) -> None:
        try:
            while self.pending:
                take, rows = 1, len(self.pending[0][0])
                while take < len(self.pending) and rows + len(self.pending[take][0]) <= self.max_rows:
                    rows += len(self.pending[take][0])
                    take += 1
                batch, self.pending = self.pending[:take], self.pending[take:]
                z = batch[0][0] if take == 1 else torch.cat([z for z, _ in batch])
                try:
                    pixels, u8 = await run_in_threadpool(self._work, z)
                except Exception as err:  # noqa: BLE001 - handed to every waiting request
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                at = 0
                for z, fut in batch:
                    if not fut.done():
                        fut.set_result((pixels[at:at + len(z)], u8[at:at + len(z)]))
                    at += len(z)
        finally:
            self.running = False


def png_grey(u8: np.ndarray) -> bytes:
    """uint8 (h, w) grey or (h, w, 3) RGB -> a PNG (no filter, zlib level 1): ~20 us for 28x28, against ~60 us
    through Pillow's ``Image.save`` (measured); the decode endpoints answer with one of these per request."""
    h, w = u8.shape[:2]
    colour = u8.ndim == 3
    raw = np.zeros((h, w * u8.shape[2] + 1 if colour else w + 1), np.uint8)  # each row starts with its filter, 0
    raw[:, 1:] = u8.reshape(h, -1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2 if colour else 0, 0, 0, 0)  # colour type 2: RGB, 0: grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


def to_u8(pixels: torch.Tensor) -> np.ndarray:
    return pixels.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
