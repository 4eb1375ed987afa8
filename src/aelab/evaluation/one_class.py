"""The one-class protocol on a run trained on one class: detector fitted, judged on the whole test set.

A run made with ``--classes C`` (one class) has seen only C's training images. Its detector is fitted on them
(``evaluation.detector``): the kNN reference from C's training split, the threshold from C's validation
split. ``score="auto"`` chooses the score by validation AUROC against the *other* classes' images of the
validation split carved from the full training set (never trained on, never the test set). Then the whole
official test set is scored: C's images are normal, the other classes' are anomalies. The baselines, PCA with
the run's latent size and an Isolation Forest on raw pixels, are fitted on the same normal training images and
thresholded the same way. The run's ``Run.anomaly`` file gets the table, its ``Run.detector`` the detector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aelab.data import DataBundle, load_dataset
from aelab.data.datasets import resolve_classes
from aelab.errors import RunError
from aelab.evaluation.anomaly import (
    DEFAULT_QUANTILE,
    SCORE_LABELS,
    detection_metrics,
    fit_isolation_forest,
    iforest_scores,
    pca_scores,
    threshold_at,
)
from aelab.evaluation.detector import Detector, fit_detector
from aelab.evaluation.passes import fit_pca
from aelab.files import write_json
from aelab.models import Autoencoder
from aelab.runs import Run

ANOMALY_FORMAT = "aelab-anomaly-1"
BASELINES = ("pca", "iforest")


@dataclass
class OneClassPasses:
    """The test split as the protocol scored it, for the figures."""

    images: torch.Tensor            # (n, 28, 28) uint8, the whole test set
    labels: np.ndarray              # (n,) class indices
    is_anomaly: np.ndarray          # (n,) bool
    scores: dict[str, np.ndarray]   # method -> score per test image
    thresholds: dict[str, float]    # method -> threshold
    detector: Detector


def normal_class(run: Run, class_names: tuple[str, ...]) -> int:
    """The index of the one class a run was trained on; ``RunError`` when it was trained on another set."""
    cfg = run.config()
    keep = resolve_classes(cfg.classes, class_names)
    if keep is None or len(keep) != 1:
        raise RunError(f"{run.path} was trained on {'every class' if keep is None else f'{len(keep)} classes'}, "
                       f"not one; the one-class protocol needs a run of one class: 'aelab anomaly --normal CLASS'")
    return keep[0]


def evaluate_one_class(run: Run, full: DataBundle | None = None, bundle: DataBundle | None = None,
                       model: Autoencoder | None = None, *, quantile: float = DEFAULT_QUANTILE,
                       score: str = "auto") -> tuple[dict[str, Any], OneClassPasses]:
    """Fit the run's detector and judge it with the baselines on the whole test set; writes ``anomaly.json``
    and ``detector.safetensors``. ``full``: the data set with every class (the run's seed and validation share);
    ``bundle``: the run's own (one-class) splits; both loaded when not given."""
    with run.writing():
        return _evaluate(run, full, bundle, model, quantile, score)


def _evaluate(run: Run, full: DataBundle | None, bundle: DataBundle | None, model: Autoencoder | None,
              quantile: float, score: str) -> tuple[dict[str, Any], OneClassPasses]:
    t0 = time.perf_counter()
    cfg = run.config()
    full = full or load_dataset(cfg.dataset, **dict(cfg.data_kwargs(), classes=None, train_limit=None))
    c = normal_class(run, full.classes)
    bundle = bundle or load_dataset(cfg.dataset, **cfg.data_kwargs())
    model = model if model is not None else run.load_model("best")
    val_anomalous = full.val.images[full.val.labels != c]
    detector, val = fit_detector(model, bundle.train.images, bundle.val.images, score=score, quantile=quantile,
                                 val_anomalous=val_anomalous)
    test = full.test
    y = test.labels.numpy() != c
    scores = detector.scores(model, test.images)
    thresholds = {k: threshold_at(val[k], quantile) for k in detector.kinds}
    pca = run.load_pca()
    if pca is None or pca.latent != cfg.latent:
        pca = fit_pca(bundle, cfg.latent)
    scores["pca"], thresholds["pca"] = pca_scores(pca, test.images), threshold_at(pca_scores(pca, bundle.val.images),
                                                                                quantile)
    forest = fit_isolation_forest(bundle.train.images, seed=cfg.seed)
    scores["iforest"] = iforest_scores(forest, test.images)
    thresholds["iforest"] = threshold_at(iforest_scores(forest, bundle.val.images), quantile)
    methods = {k: {"label": SCORE_LABELS[k], "kind": "baseline" if k in BASELINES else "autoencoder",
                   **detection_metrics(scores[k], y, thresholds[k])} for k in scores}
    result = {
        "format": ANOMALY_FORMAT,
        "run": run.path.name, "dataset": cfg.dataset, "model": cfg.model, "latent": cfg.latent,
        "normal": full.classes[c], "normal_index": c, "quantile": quantile,
        "score": detector.score, "score_label": SCORE_LABELS[detector.score],
        "score_choice": {"asked": score, "val_auroc": detector.val_auroc,
                         "how": "highest validation AUROC: the normal class's validation split against the other "
                                "classes' images of the validation split of the full training set"
                                if detector.val_auroc else "given" if score != "auto" else "mse (no anomalies)"},
        "threshold": detector.threshold,
        "split": {"train_normal": len(bundle.train), "val_normal": len(bundle.val),
                  "val_anomalous": len(val_anomalous), "test_normal": int((~y).sum()), "test_anomalous": int(y.sum())},
        "methods": methods,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(run.anomaly, result)
    detector.save(run)
    passes = OneClassPasses(images=test.images, labels=test.labels.numpy(), is_anomaly=y, scores=scores,
                            thresholds=thresholds, detector=detector)
    return result, passes


def format_anomaly_table(result: dict[str, Any]) -> str:
    """One run's methods as plain text: AUROC, AP, precision / recall / F1 at the threshold."""
    lines = [f"normal class {result['normal']!r}: {result['split']['test_normal']} normal and "
             f"{result['split']['test_anomalous']} anomalous test images; threshold: the {result['quantile']:g} "
             f"quantile of normal validation scores",
             f"{'method':<46}{'AUROC':>8}{'AP':>8}{'prec.':>8}{'recall':>8}{'F1':>8}"]
    for k, m in result["methods"].items():
        mark = " *" if k == result["score"] else ""
        name = ("baseline: " if m["kind"] == "baseline" else "AE: ") + m["label"] + mark
        lines.append(f"{name:<46}{m['auroc']:>8.4f}{m['ap']:>8.4f}{m['precision']:>8.3f}{m['recall']:>8.3f}"
                     f"{m['f1']:>8.3f}")
    lines.append(f"* the detector's score ({result['score_choice']['how']})")
    return "\n".join(lines)
