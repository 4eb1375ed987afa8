"""Anomaly scores and flags on a trained model, as scikit-learn's outlier detectors give them.

``TrainedModel`` (``use.api``) takes these methods from ``OutlierMixin``:

- ``anomaly_score(X)``: the detector's score per image, higher = more anomalous (docs/anomaly.md);
- ``score_samples(X)``: its negation, scikit-learn's convention (lower = more abnormal, as IsolationForest);
- ``decision_function(X)``: ``threshold - anomaly_score``: negative for the images flagged;
- ``predict(X)``: +1 for normal, -1 for anomalous (score above the threshold);
- ``fit_detector(normal_images)``: a threshold (and kNN reference) from normal images of your own;
- ``denoise(X)``: the model's output for (noisy) images: a denoising run (``--noise``) cleans them.

A run made by ``aelab anomaly`` carries its detector (``RUN/detector.safetensors``: score, threshold); for any
other model call ``fit_detector`` first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aelab.data import split_indices, to_pixels
from aelab.errors import InputError
from aelab.evaluation.anomaly import DEFAULT_QUANTILE
from aelab.evaluation.detector import Detector, fit_detector
from aelab.models import Autoencoder

SCORE_BATCH = 4096  # images checked and scored at a time (bounds the memory for a memory-mapped array)


class OutlierMixin:
    """Outlier-detection methods for a class with ``model`` (an Autoencoder), ``detector`` and ``reconstruct``."""

    model: Autoencoder
    detector: Detector | None

    def _pixels(self, images: Any, start: int, stop: int) -> torch.Tensor:
        return to_pixels(images[start:stop], first_index=start, shape=self.model.image_shape)

    def _check(self, images: Any) -> None:
        if not hasattr(images, "shape") or not hasattr(images, "__getitem__"):
            raise InputError(f"images must be a numpy array or a torch tensor, not {type(images).__name__}")

    def _require_detector(self) -> Detector:
        if self.detector is None:
            raise InputError("this model has no anomaly detector yet: call fit_detector(normal_images) first, or "
                             "load a run made by 'aelab anomaly'")
        return self.detector

    def anomaly_score(self, images: Any, score: str | None = None) -> np.ndarray:
        """The anomaly score of each image (float64, higher = more anomalous): the detector's own score, or
        ``score`` (mse, ssim, knn, mse+knn, ssim+knn; elbo for a VAE)."""
        self._check(images)
        det = self._require_detector()
        kind = score or det.score
        if kind not in det.kinds:
            raise InputError(f"unknown score {kind!r}; this detector offers {', '.join(det.kinds)}")
        parts = [det.scores(self.model, self._pixels(images, i, i + SCORE_BATCH), (kind,))[kind]
                 for i in range(0, len(images), SCORE_BATCH)]
        return np.concatenate(parts) if parts else np.empty(0)

    def score_samples(self, images: Any) -> np.ndarray:
        """The negated anomaly score (scikit-learn's convention: the lower, the more abnormal)."""
        return -self.anomaly_score(images)

    def decision_function(self, images: Any) -> np.ndarray:
        """``threshold - anomaly score``: negative for the images ``predict`` flags as anomalies."""
        return self._require_detector().threshold - self.anomaly_score(images)

    def predict(self, images: Any) -> np.ndarray:
        """+1 (normal) or -1 (anomalous: score above the detector's threshold) per image, as scikit-learn's
        outlier detectors answer."""
        return np.where(self.decision_function(images) < 0, -1, 1)

    def fit_detector(self, normal_images: Any, quantile: float = DEFAULT_QUANTILE, score: str = "mse",
                     val_fraction: float = 0.1, seed: int = 0) -> Any:
        """Fit the detector on normal images of your own: a seeded ``val_fraction`` of them sets the threshold
        (their ``quantile``), the rest are the latent kNN reference. Returns self."""
        self._check(normal_images)
        x = torch.cat([self._pixels(normal_images, i, i + SCORE_BATCH)
                       for i in range(0, len(normal_images), SCORE_BATCH)]) if len(normal_images) else None
        if x is None or len(x) < 2:
            raise InputError("fit_detector needs at least 2 normal images")
        ref, val = split_indices(len(x), val_fraction, seed)
        if len(val) == 0 or len(ref) == 0:
            raise InputError(f"val_fraction {val_fraction} leaves no image for the threshold or the reference")
        self.detector, _ = fit_detector(self.model, x[torch.from_numpy(ref)], x[torch.from_numpy(val)],
                                        score=score, quantile=quantile)
        return self

    def denoise(self, images: Any, **kwargs: Any) -> Any:
        """The model's output for ``images``: ``reconstruct`` by another name, for a denoising run's noisy input."""
        return self.reconstruct(images, **kwargs)  # type: ignore[attr-defined]
