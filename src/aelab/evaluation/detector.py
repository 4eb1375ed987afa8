"""An anomaly detector on a trained autoencoder: its score, the threshold, and what the score needs.

``fit_detector`` takes normal images only: the training images give the reference codes of the latent kNN
score, the validation images give the standardisation of the combined score and the threshold (a quantile of
their scores). When validation anomalies are given too (``score="auto"``), the score with the highest
validation AUROC becomes the detector's score; no test image is ever used. ``Detector.save(run)`` keeps it in
the run folder (``Run.detector``: checksummed, atomic), which ``aelab score`` and ``aelab.load(RUN)`` read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.checkpoints import load_checkpoint, save_checkpoint
from aelab.data import load_dataset
from aelab.errors import ConfigError, RunError
from aelab.evaluation.anomaly import (
    DEFAULT_QUANTILE,
    SCORES,
    available_scores,
    choose_score,
    knn_distance,
    model_scores,
    threshold_at,
)
from aelab.models import Autoencoder
from aelab.runs import Run

DETECTOR_FORMAT = "aelab-detector-1"
REFERENCE_LIMIT = 10_000  # training images whose codes a detector fitted on a run's own data keeps for kNN


@dataclass
class Detector:
    """What flags an image: ``score`` > ``threshold``; ``reference`` codes and ``stats`` for the latent scores."""

    score: str
    threshold: float
    quantile: float
    kinds: tuple[str, ...]                      # every score this detector computes (its table's rows)
    reference: np.ndarray | None = None         # (m, latent) codes of normal training images, for knn
    stats: dict[str, list[float]] = field(default_factory=dict)  # kind -> [mean, std] on normal validation
    val_auroc: dict[str, float] = field(default_factory=dict)    # kind -> validation AUROC (when chosen so)

    def scores(self, model: Autoencoder, images: torch.Tensor, kinds: tuple[str, ...] | None = None
               ) -> dict[str, np.ndarray]:
        """{kind: anomaly score per image} for uint8 images (n, 28, 28) or float pixels (n, 1, 28, 28)."""
        return all_scores(model, images, kinds or self.kinds, self.reference, self.stats)

    def anomaly_score(self, model: Autoencoder, images: torch.Tensor) -> np.ndarray:
        """The detector's own score per image (higher: more anomalous)."""
        return self.scores(model, images, (self.score,))[self.score]

    def meta(self) -> dict[str, Any]:
        return {"format": DETECTOR_FORMAT, "score": self.score, "threshold": self.threshold,
                "quantile": self.quantile, "kinds": list(self.kinds), "stats": self.stats,
                "val_auroc": self.val_auroc}

    def save(self, run: Run) -> Path:
        tensors = {"reference": torch.from_numpy(np.ascontiguousarray(self.reference, dtype=np.float32))} \
            if self.reference is not None else {"none": torch.zeros(1)}
        return save_checkpoint(run.detector, tensors, self.meta())

    @classmethod
    def load(cls, run: Run) -> Detector | None:
        """The detector stored in ``run``, or None when it has none."""
        path = run.detector
        if not path.is_file():
            return None
        tensors, meta = load_checkpoint(path)
        if meta.get("format") != DETECTOR_FORMAT:
            raise RunError(f"{path} is not an {DETECTOR_FORMAT} file; make it again with 'aelab anomaly'")
        ref = tensors.get("reference")
        return cls(score=meta["score"], threshold=float(meta["threshold"]), quantile=float(meta["quantile"]),
                   kinds=tuple(meta["kinds"]), reference=ref.numpy() if ref is not None else None,
                   stats={k: list(v) for k, v in meta.get("stats", {}).items()},
                   val_auroc=dict(meta.get("val_auroc", {})))


def _needs(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The pixel scores (and codes) a set of scores is computed from."""
    need: list[str] = []
    for k in kinds:
        parts = ["code" if part == "knn" else part for part in k.split("+")]
        need += [p for p in parts if p not in need]
    return tuple(need)


def all_scores(model: Autoencoder, images: torch.Tensor, kinds: tuple[str, ...], reference: np.ndarray | None,
               stats: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Scores ``kinds`` of the images: pixel scores from one pass, ``knn`` against ``reference``, the sums
    (``mse+knn``, ``ssim+knn``) of their parts standardised with ``stats`` (kind -> [mean, std])."""
    raw = model_scores(model, images, _needs(kinds))
    if "code" in raw:
        if reference is None:
            raise RunError("the latent kNN score needs the normal training codes; fit the detector again")
        raw["knn"] = knn_distance(reference, raw.pop("code"))
    out = {}
    for k in kinds:
        parts = k.split("+")
        out[k] = raw[k] if len(parts) == 1 else sum(_standard(raw[p], stats[p]) for p in parts)
    return out


def _standard(values: np.ndarray, stat: list[float]) -> np.ndarray:
    return (values - stat[0]) / (stat[1] if stat[1] > 0 else 1.0)


def fit_detector(model: Autoencoder, normal_train: torch.Tensor, normal_val: torch.Tensor, *,
                 score: str = "auto", quantile: float = DEFAULT_QUANTILE,
                 val_anomalous: torch.Tensor | None = None) -> tuple[Detector, dict[str, np.ndarray]]:
    """A detector for ``model`` from normal images only (``val_anomalous`` only to choose ``score="auto"``), and
    every score of the normal validation images (each kind's own threshold is their ``quantile``).

    ``normal_train``: the codes of these are the kNN reference; ``normal_val``: the threshold (their
    ``quantile``) and the standardisation of the combined scores. ``score="auto"`` takes the score of highest validation
    AUROC against ``val_anomalous``, or ``mse`` when none are given.
    """
    kinds = available_scores(model)
    if score != "auto" and score not in kinds:
        raise ConfigError(f"unknown score {score!r} for this model; choose one of: auto, {', '.join(kinds)}")
    if len(normal_val) == 0:
        raise ConfigError("the threshold needs normal validation images; use --val-fraction > 0")
    reference = model_scores(model, normal_train, ("code",))["code"]
    single = tuple(k for k in kinds if "+" not in k)
    val = all_scores(model, normal_val, single, reference, {})
    stats = {k: [float(np.mean(val[k])), float(np.std(val[k]))] for k in single}
    for k in kinds:
        if "+" in k:
            val[k] = sum(_standard(val[p], stats[p]) for p in k.split("+"))
    aurocs: dict[str, float] = {}
    if score == "auto":
        if val_anomalous is not None and len(val_anomalous):
            anomalous = all_scores(model, val_anomalous, kinds, reference, stats)
            score, aurocs = choose_score({k: val[k] for k in kinds}, anomalous)
        else:
            score = "mse"
    return Detector(score=score, threshold=threshold_at(val[score], quantile), quantile=quantile,
                    kinds=tuple(k for k in SCORES if k in kinds), reference=reference, stats=stats,
                    val_auroc=aurocs), val


def run_detector(run: Run, model: Autoencoder, quantile: float | None = None, score: str | None = None) -> Detector:
    """The detector stored in ``run`` (made by ``aelab anomaly``); when there is none, or ``quantile`` or
    ``score`` ask for another, one fitted on the run's own data: the first ``REFERENCE_LIMIT`` training images as
    the kNN reference, the validation split for the threshold (no anomalies known: ``auto`` means ``mse``)."""
    stored = Detector.load(run)
    if stored is not None and quantile in (None, stored.quantile) and score in (None, "auto", stored.score):
        return stored
    cfg = run.config()
    bundle = load_dataset(cfg.dataset, **cfg.data_kwargs())
    score = score if score not in (None, "auto") else stored.score if stored is not None else "mse"
    quantile = quantile if quantile is not None else DEFAULT_QUANTILE
    return fit_detector(model, bundle.train.images[:REFERENCE_LIMIT], bundle.val.images, score=score,
                        quantile=quantile)[0]
