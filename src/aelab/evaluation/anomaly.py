"""Anomaly scores and how well they separate normal from anomalous images (docs/anomaly.md).

Scores, one per image, higher = more anomalous:

- ``mse``: the autoencoder's reconstruction MSE per pixel;
- ``ssim``: 1 - SSIM of the reconstruction (the headline SSIM of DESIGN.md);
- ``knn``: the mean Euclidean distance of the image's latent code to its 20 nearest codes of normal training
  images (a density estimate in the latent space: how unusual the code is, where the reconstruction error
  says how badly the decoder can draw the image);
- ``mse+knn`` and ``ssim+knn``: the sum of a reconstruction score and ``knn``, each standardised by its mean
  and standard deviation on normal validation images (so neither dominates by its units);
- ``elbo`` (VAE models only): the negative ELBO in nats, -log p(x|z) at the posterior mean plus
  KL(q(z|x) || N(0, I)) in closed form (deterministic: no sampling);
- baselines: ``pca``, the reconstruction MSE of PCA with the run's latent size, and ``iforest``, scikit-learn's
  IsolationForest on raw pixels (its negated ``score_samples``), both fitted on the normal training images.

Judgement (``detection_metrics``), anomalies as the positive class: AUROC (scikit-learn ``roc_auc_score``),
average precision (``average_precision_score``) and precision / recall / F1 of the flag score > threshold,
where the threshold is a quantile of the scores of normal *validation* images (``threshold_at``): with
quantile 0.95 about 5% of normal images are flagged.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score
from sklearn.neighbors import NearestNeighbors

from aelab.evaluation.metrics import mse_per_image, ssim_per_image
from aelab.evaluation.passes import BatchedInference
from aelab.models import VAE, Autoencoder, PCAModel, kl_per_dim

SCORES = ("mse", "ssim", "knn", "mse+knn", "ssim+knn", "elbo")
PIXEL_SCORES = ("mse", "ssim", "elbo")  # computed from one pass over the images, no reference set needed
SCORE_LABELS = {"mse": "reconstruction MSE", "ssim": "1 - SSIM", "knn": "latent 20-NN distance",
                "mse+knn": "MSE + latent kNN (standardised)", "ssim+knn": "1 - SSIM + latent kNN (standardised)",
                "elbo": "negative ELBO",
                "pca": "PCA reconstruction MSE", "iforest": "Isolation Forest (raw pixels)"}
DEFAULT_QUANTILE = 0.95
IFOREST_TREES = 200
KNN_K = 20  # neighbours of the latent kNN score (5, 10, 20 measured: 20 best, docs/anomaly.md)


def available_scores(model: Autoencoder) -> tuple[str, ...]:
    """The scores ``model`` offers: mse, ssim, knn, mse+knn, ssim+knn, and elbo for a VAE."""
    return SCORES if isinstance(model, VAE) else SCORES[:-1]


def score_batch(fast: Autoencoder, x: torch.Tensor, kinds: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The pixel scores among ``kinds`` (mse, ssim, elbo; CPU float64, one per image) of float pixels ``x``
    (b, C, H, W) on the inference copy ``fast`` (``models.inference_copy``), in the layout and on the device it
    wants; with ``code`` in ``kinds`` also the latent codes (b, latent), float32."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(fast, VAE):
        mean, logvar = fast.posterior(x)
        z = mean
        logits = fast.decode(mean)
        if "elbo" in kinds:
            nelbo = -fast.log_likelihood(logits, x) + kl_per_dim(mean.float(), logvar.float()).sum(1)
            out["elbo"] = nelbo.double().cpu()
    else:
        z = fast.encode(x)
        logits = fast.decode(z)
    if "code" in kinds:
        out["code"] = z.float().cpu()
    recon = torch.sigmoid(logits.float())
    target = x.float()
    if "mse" in kinds:
        out["mse"] = mse_per_image(recon, target).double().cpu()
    if "ssim" in kinds:
        out["ssim"] = (1.0 - ssim_per_image(recon, target)).double().cpu()
    return out


def model_scores(model: Autoencoder, images: torch.Tensor, kinds: tuple[str, ...] | None = None,
                 batch: int | None = None) -> dict[str, np.ndarray]:
    """Pixel scores (and ``code``, when asked) of uint8 images (n, H, W) / (n, C, H, W) or float pixels (n, C, H, W):
    {kind: float64 array (n,)}, codes (n, latent) float32. Latent scores need a reference set: see
    ``evaluation.detector``."""
    kinds = kinds or tuple(k for k in available_scores(model) if k in PIXEL_SCORES)
    unknown = [k for k in kinds if k not in PIXEL_SCORES + ("code",) or (k == "elbo" and not isinstance(model, VAE))]
    if unknown:
        raise ValueError(f"score {unknown[0]!r} is not a pixel score of this model; use one of "
                         f"{', '.join(k for k in available_scores(model) if k in PIXEL_SCORES)}")
    parts = BatchedInference(model, batch).map(images, lambda m, x: score_batch(m, x, kinds))
    return {k: torch.cat([p[k] for p in parts]).numpy() if parts else np.empty(0) for k in kinds}


def pca_scores(pca: PCAModel, images: torch.Tensor) -> np.ndarray:
    """PCA's reconstruction MSE per image (pixels clipped to [0, 1], like its reconstructions)."""
    x = images.reshape(len(images), -1)
    target = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return mse_per_image(pca.reconstruct(images).reshape(len(images), -1), target).double().numpy()


def fit_isolation_forest(images: torch.Tensor, seed: int = 0) -> IsolationForest:
    """An IsolationForest fitted on the raw pixels of uint8 images (n, 28, 28)."""
    return IsolationForest(n_estimators=IFOREST_TREES, random_state=seed, n_jobs=1).fit(_flat(images))


def iforest_scores(forest: IsolationForest, images: torch.Tensor) -> np.ndarray:
    """The forest's anomaly score per image (its ``score_samples`` negated: higher = more anomalous)."""
    return -forest.score_samples(_flat(images)).astype(np.float64)


def _flat(images: torch.Tensor) -> np.ndarray:
    x = images.reshape(len(images), -1)
    return (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).numpy()


def threshold_at(normal_scores: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The flag threshold: the ``quantile`` of the scores of normal (validation) images."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile {quantile} is outside (0, 1); use e.g. 0.95")
    if len(normal_scores) == 0:
        raise ValueError("no normal validation images to set the threshold on")
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), quantile))


def detection_metrics(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, average precision, and precision / recall / F1 of ``scores > threshold`` (anomaly = positive)."""
    y = np.asarray(is_anomaly, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    flag = s > threshold
    both = 0 < y.sum() < len(y)
    p, r, f, _ = precision_recall_fscore_support(y, flag, average="binary", zero_division=0)
    return {"auroc": float(roc_auc_score(y, s)) if both else float("nan"),
            "ap": float(average_precision_score(y, s)) if both else float("nan"),
            "precision": float(p), "recall": float(r), "f1": float(f), "threshold": float(threshold),
            "flagged": float(flag.mean()) if len(flag) else float("nan"),
            "false_positive_rate": float(flag[~y].mean()) if (~y).any() else float("nan")}


def choose_score(normal: dict[str, np.ndarray], anomalous: dict[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    """The score with the highest AUROC on validation images (normal vs anomalous); ties go to the first in
    ``SCORES``. Returns (name, {name: validation AUROC})."""
    aurocs = {}
    for k in normal:
        y = np.r_[np.zeros(len(normal[k])), np.ones(len(anomalous[k]))]
        aurocs[k] = float(roc_auc_score(y, np.r_[normal[k], anomalous[k]]))
    best = max(aurocs, key=lambda k: (aurocs[k], -SCORES.index(k)))
    return best, aurocs


def knn_distance(reference: np.ndarray, codes: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Mean Euclidean distance of each row of ``codes`` to its ``k`` nearest rows of ``reference``."""
    if len(codes) == 0:
        return np.empty(0)
    nn = NearestNeighbors(n_neighbors=min(k, len(reference)), algorithm="brute").fit(reference)
    return nn.kneighbors(codes)[0].mean(1).astype(np.float64)
