"""The plain PyTorch peer: a per-sample Dataset and a DataLoader, as most tutorials write the loop.

``FashionMNISTDataset.__getitem__`` does per image what torchvision's ``FashionMNIST`` with the ``ToTensor()``
transform does (a PIL image from the uint8 array, then a float tensor scaled to [0, 1]); the DataLoader
collates batches of 256 in the main process (``num_workers=0``, the tutorials' default; this 2-core machine
has no core to spare for workers). The model is aelab's own ``conv`` model in the default NCHW layout, so
that the comparison isolates the loop and the data path, not the architecture.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aelab.models import build_model


class FashionMNISTDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i], mode="L")  # what torchvision's dataset hands the transform
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(28, 28, 1).permute(2, 0, 1)
        return x.contiguous().float().div(255), int(self.labels[i])  # what ToTensor() returns


class TutorialLoop:
    """A model, its optimizer and a DataLoader over ``images``; ``epoch()`` trains one pass and times it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, latent: int = 64, batch: int = 256,
                 seed: int = 0):
        torch.manual_seed(seed)
        self.model = build_model("conv", latent=latent)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.criterion = nn.BCEWithLogitsLoss()
        self.loader = DataLoader(FashionMNISTDataset(images.numpy(), labels.numpy()), batch_size=batch,
                                 shuffle=True)

    def epoch(self) -> dict[str, Any]:
        self.model.train()
        running, n = 0.0, 0
        t0 = time.perf_counter()
        for img, _ in self.loader:
            out = self.model(img)
            loss = self.criterion(out, img)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            running += loss.item() * len(img)
            n += len(img)
        seconds = time.perf_counter() - t0
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "loss": running / max(n, 1)}


def encode_with_loader(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       batch: int = 256) -> tuple[torch.Tensor, float]:
    """Encode ``images`` the tutorial way (DataLoader, ``torch.no_grad``); returns (codes, seconds)."""
    loader = DataLoader(FashionMNISTDataset(images.numpy(), labels.numpy()), batch_size=batch, shuffle=False)
    model.eval()
    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for img, _ in loader:
            out.append(model.encode(img))
    return torch.cat(out), time.perf_counter() - t0
