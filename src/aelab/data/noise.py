"""Input corruptions for denoising: Gaussian noise, salt-and-pepper, masked patches, each seeded and repeatable.

``NoiseSpec.parse("gaussian:0.3")`` reads the ``--noise`` option (the grammar is checked in ``config.py``);
``spec.apply(x, generator)`` corrupts float pixels (n, 1, 28, 28) in [0, 1] and returns new pixels in [0, 1]:

- ``gaussian:SIGMA``: x + SIGMA * N(0, 1) per pixel, clipped to [0, 1];
- ``salt-pepper:P``: each pixel, with probability P, replaced by 0 or by 1 (each half the time);
- ``mask:FRACTION``: the 28x28 image cut into 49 patches of 4x4 pixels, and round(FRACTION * 49) of them,
  drawn at random per image, set to 0 (erased).

The noise is a pure function of (seed, stream, epoch, batch) through ``generator_for``: the trainer draws a
batch's noise from ``generator_for(seed, TRAIN_STREAM, epoch, batch)``, so a resumed run sees exactly the
noise the uninterrupted run would have seen, with no generator state in the checkpoint. Evaluation corrupts
the validation and test splits with their own fixed streams (``corrupt_images``), the same every time.
It lives in ``data`` (not ``training``) because evaluation corrupts the test set too and may not import the
trainer's layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aelab.config import parse_noise

PATCH = 4              # mask: side of an erased patch, in pixels (28 = 7 patches of 4)
TRAIN_STREAM = 0       # generator_for streams: training batches, validation, test
VAL_STREAM = 1
TEST_STREAM = 2
CORRUPT_BATCH = 2048   # images corrupted per generator in corrupt_images


def generator_for(seed: int, stream: int, epoch: int, batch: int, device: torch.device | str = "cpu"
                  ) -> torch.Generator:
    """A torch generator whose state depends on (seed, stream, epoch, batch) only (numpy's SeedSequence mixes
    them, so neighbouring values give unrelated streams)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, epoch, batch]).generate_state(2, np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] >> np.uint64(1)))


@dataclass(frozen=True)
class NoiseSpec:
    """One corruption: ``kind`` (gaussian, salt-pepper, mask) and its ``level`` (sigma, probability, fraction)."""

    kind: str
    level: float

    @classmethod
    def parse(cls, text: str | None) -> NoiseSpec | None:
        """``gaussian:0.3`` -> NoiseSpec; None or an empty string -> None; bad text -> ``ConfigError``."""
        parsed = parse_noise(text)
        return None if parsed is None else cls(*parsed)

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def describe(self) -> str:
        """In words, for captions and tables."""
        return {"gaussian": f"Gaussian noise, sigma {self.level:g} (clipped to [0, 1])",
                "salt-pepper": f"salt-and-pepper noise, {self.level:.0%} of the pixels",
                "mask": f"{self.masked_patches()} of 49 patches of {PATCH}x{PATCH} pixels erased "
                        f"({self.level:g} asked)"}[self.kind]

    def masked_patches(self) -> int:
        return int(round(self.level * (28 // PATCH) ** 2))

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Corrupted copy of float pixels ``x`` (n, 1, 28, 28) in [0, 1], drawn from ``generator`` (on x's
        device); the memory layout of ``x`` is kept."""
        if self.kind == "gaussian":
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return (x + self.level * noise).clamp_(0.0, 1.0)
        if self.kind == "salt-pepper":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            out = x.clone()
            out[u < self.level / 2] = 0.0
            out[(u >= self.level / 2) & (u < self.level)] = 1.0
            return out
        side = 28 // PATCH
        n = x.shape[0]
        keys = torch.rand((n, side * side), generator=generator, device=x.device)
        erased = torch.zeros((n, side * side), dtype=torch.bool, device=x.device)
        k = self.masked_patches()
        if k:
            erased.scatter_(1, keys.argsort(dim=1)[:, :k], True)
        mask = erased.view(n, 1, side, side).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
        return x.masked_fill(mask, 0.0)


def corrupt_images(images: torch.Tensor, spec: NoiseSpec, seed: int, stream: int) -> torch.Tensor:
    """The corrupted float pixels (n, 1, 28, 28) of uint8 images (n, 28, 28) or float pixels (n, 1, 28, 28),
    on the CPU: a pure function of (images, spec, seed, stream), the same on every call."""
    out = []
    for b, start in enumerate(range(0, len(images), CORRUPT_BATCH)):
        chunk = images[start:start + CORRUPT_BATCH]
        x = chunk.unsqueeze(1).float().div(255.0) if chunk.dtype == torch.uint8 else chunk.float()
        out.append(spec.apply(x.cpu(), generator_for(seed, stream, 0, b)))
    return torch.cat(out) if out else torch.empty(0, 1, 28, 28)
