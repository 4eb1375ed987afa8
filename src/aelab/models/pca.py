"""The PCA baseline with the autoencoders' interface (scikit-learn PCA on flattened pixels).

What it is fitted on, in bounded memory and time whatever the images:

- **The images.** All training images when their float32 pixels take at most ``FIT_BYTES`` (256 MB: every
  built-in data set, 54,000 x 784 values = 169 MB); otherwise a seeded sample of ``FIT_BYTES`` worth (sorted
  indices from ``numpy.random.default_rng(seed)``): 5,461 images of 64x64 RGB, 4,096 of 128x128 grey, 1,365 of
  128x128 RGB.
- **The solver.** Up to ``EXACT_DIMS`` values per image (4,096: 64x64 grey, 32x32 RGB), scikit-learn's exact
  ``covariance_eigh`` (the D x D covariance), or the exact ``full`` SVD when there are fewer images than values
  (320 images of 64x64: 0.1 s against 9.8 s for the 4,096 x 4,096 eigendecomposition); above it, where that
  matrix alone would take gigabytes (49,152
  values: 9.7 GB in float32) and its eigendecomposition minutes, the randomized solver (Halko et al.; 10
  oversamples, scikit-learn's power iterations, ``random_state=seed``), which gives the leading components.
- Codes and reconstructions are computed per batch by the caller (``evaluation.passes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA

FIT_BYTES = 256 << 20  # float32 pixels PCA is fitted on at most (see the module docstring)
EXACT_DIMS = 4096      # values per image up to which the exact covariance solver is used


class PCAModel:
    """The PCA baseline with the autoencoders' interface (scikit-learn PCA, fitted on flattened pixels).

    ``decode`` returns pixels (clipped to [0, 1]), not logits: PCA has no sigmoid.
    """

    def __init__(self, latent: int, shape: tuple[int, int, int] = (1, 28, 28)):
        self.latent = latent
        self.shape = tuple(int(v) for v in shape)  # (C, H, W) of the images; colour: all channels' pixels together
        self.pca = PCA(n_components=latent, svd_solver="covariance_eigh")
        self.fitted_on = 0  # images the fit used (all of them, or the sample)

    @staticmethod
    def sample(n: int, dims: int, seed: int = 0) -> np.ndarray | None:
        """The indices of the training images the fit uses, sorted; None: all ``n`` (the module docstring)."""
        fit = max(1, FIT_BYTES // (4 * dims))
        return None if n <= fit else np.sort(np.random.default_rng(seed).permutation(n)[:fit])

    def fit(self, images: Any, seed: int = 0) -> PCAModel:
        """``images``: uint8 (n, H, W) / (n, C, H, W) or float (n, C, H, W) in [0, 1], of ``shape``: a tensor, or
        anything that gives one for ``images[idx]`` (a store read from disk, ``data.stream``)."""
        dims = int(np.prod(self.shape))
        idx = self.sample(len(images), dims, seed)
        part = images[slice(None) if idx is None else idx]
        x = self._flat(part)
        owned = not isinstance(part, torch.Tensor) or part.dtype == torch.uint8  # x is a new array: no copy needed
        solver = "randomized" if dims > EXACT_DIMS else "covariance_eigh" if len(x) >= dims else "full"
        self.pca = PCA(n_components=self.latent, svd_solver=solver, random_state=seed, copy=not owned)
        self.pca.fit(x)
        self.fitted_on = len(x)
        return self

    @staticmethod
    def _flat(images: Any) -> np.ndarray:
        if not isinstance(images, torch.Tensor):
            images = images[:]  # a store (data.stream): read whole; callers pass batches
        x = images.reshape(images.shape[0], -1)
        x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)  # one float copy
        return x.numpy()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.pca.transform(self._flat(images)).astype(np.float32))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.pca.inverse_transform(codes.numpy().astype(np.float32))
        return torch.from_numpy(np.clip(x, 0.0, 1.0).astype(np.float32)).reshape(-1, *self.shape)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def state(self) -> dict[str, torch.Tensor]:
        return {"components": torch.from_numpy(self.pca.components_.astype(np.float32)),
                "mean": torch.from_numpy(self.pca.mean_.astype(np.float32)),
                "explained_variance": torch.from_numpy(self.pca.explained_variance_.astype(np.float32))}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], shape: tuple[int, int, int] = (1, 28, 28)) -> PCAModel:
        comps = state["components"].numpy()
        model = cls(comps.shape[0], shape)
        p = model.pca
        p.components_ = comps
        p.mean_ = state["mean"].numpy()
        p.explained_variance_ = state["explained_variance"].numpy()
        p.n_components_ = comps.shape[0]
        p.n_features_in_ = comps.shape[1]
        p.whiten = False
        return model
