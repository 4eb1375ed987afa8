"""The PCA baseline with the autoencoders' interface (scikit-learn PCA on flattened pixels)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA


class PCAModel:
    """The PCA baseline with the autoencoders' interface (scikit-learn PCA, fitted on flattened pixels).

    ``decode`` returns pixels (clipped to [0, 1]), not logits: PCA has no sigmoid.
    """

    def __init__(self, latent: int, shape: tuple[int, int, int] = (1, 28, 28)):
        self.latent = latent
        self.shape = tuple(int(v) for v in shape)  # (C, H, W) of the images; colour: all channels' pixels together
        self.pca = PCA(n_components=latent, svd_solver="covariance_eigh")

    def fit(self, images: torch.Tensor) -> PCAModel:
        """``images``: uint8 (n, H, W) / (n, C, H, W) or float (n, C, H, W) in [0, 1], of ``shape``."""
        self.pca.fit(self._flat(images))
        return self

    @staticmethod
    def _flat(images: torch.Tensor) -> np.ndarray:
        x = images.reshape(images.shape[0], -1)
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
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
