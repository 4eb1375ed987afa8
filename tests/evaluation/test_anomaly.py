"""Anomaly scores and the one-class protocol: the metrics against scikit-learn, normal/anomalous labels,
the threshold and the score choice from validation only (no test image in any choice)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from aelab.config import dump_yaml, resolve
from aelab.data import load_dataset
from aelab.errors import RunError
from aelab.evaluation.anomaly import choose_score, detection_metrics, knn_distance, threshold_at
from aelab.evaluation.detector import Detector
from aelab.evaluation.one_class import evaluate_one_class
from aelab.experiments.jobs import train_job
from aelab.files import atomic_write_text
from aelab.runs import Run

TROUSER = 1


def test_detection_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = rng.normal(size=500) + 1.5 * y
    m = detection_metrics(s, y, threshold=0.8)
    flag = s > 0.8
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["precision"] == pytest.approx(precision_score(y, flag))
    assert m["recall"] == pytest.approx(recall_score(y, flag))
    assert m["f1"] == pytest.approx(f1_score(y, flag))
    assert m["false_positive_rate"] == pytest.approx(flag[~y].mean())
    perfect = detection_metrics(np.r_[np.zeros(10), np.ones(5)], np.r_[np.zeros(10), np.ones(5)] > 0, 0.5)
    assert perfect["auroc"] == 1.0 and perfect["f1"] == 1.0


def test_threshold_is_the_quantile_and_the_choice_is_the_best_validation_auroc() -> None:
    normal = np.arange(101, dtype=float)
    assert threshold_at(normal, 0.95) == pytest.approx(95.0)
    with pytest.raises(ValueError, match="quantile"):
        threshold_at(normal, 1.0)
    rng = np.random.default_rng(1)
    n = {"mse": rng.normal(size=200), "ssim": rng.normal(size=200)}
    a = {"mse": rng.normal(size=200) + 0.2, "ssim": rng.normal(size=200) + 2.0}
    best, aurocs = choose_score(n, a)
    assert best == "ssim" and aurocs["ssim"] > aurocs["mse"]


def test_knn_distance_is_the_mean_distance_to_the_nearest_references() -> None:
    ref = np.array([[0.0], [1.0], [3.0]])
    d = knn_distance(ref, np.array([[0.0], [10.0]]), k=2)
    assert d.tolist() == pytest.approx([0.5, 8.0])


@pytest.fixture(scope="module")
def one_class_run(tmp_path_factory, data_root):
    """A real run trained on Trouser only (dense, 600 images, 2 epochs)."""
    cfg = resolve(overrides=dict(model="dense", width=0.25, latent=8, loss="mse", epochs=2, batch_size=64,
                                 train_limit=600, classes=["Trouser"], threads=1, report=False))
    run, _ = train_job(cfg, tmp_path_factory.mktemp("oc") / "trouser", progress=False)
    return run, cfg


def test_protocol_labels_threshold_and_choice_use_no_test_image(one_class_run) -> None:
    run, cfg = one_class_run
    full = load_dataset("fashion-mnist", seed=cfg.seed, val_fraction=cfg.val_fraction)
    bundle = load_dataset("fashion-mnist", **cfg.data_kwargs())
    result, passes = evaluate_one_class(run, full, bundle, quantile=0.9)

    # Labels: the normal class's test images are normal, the other nine classes' are anomalies.
    labels = full.test.labels.numpy()
    assert np.array_equal(passes.is_anomaly, labels != TROUSER)
    assert result["split"]["test_normal"] == int((labels == TROUSER).sum()) == 1000
    assert result["split"]["test_anomalous"] == 9000
    assert result["split"]["train_normal"] == 600 and bool((bundle.train.labels == TROUSER).all())
    assert result["split"]["val_anomalous"] == int((full.val.labels != TROUSER).sum())

    # The threshold is the quantile of the normal *validation* scores of the chosen score.
    det = Detector.load(run)
    model = run.load_model("best")
    val_scores = det.scores(model, bundle.val.images)[det.score]
    assert det.threshold == pytest.approx(float(np.quantile(val_scores, 0.9)), rel=1e-6)
    assert result["methods"][det.score]["threshold"] == pytest.approx(det.threshold)
    assert det.val_auroc and det.score == max(det.val_auroc, key=det.val_auroc.get)

    # Another test set changes the table, never the choices: score, threshold, baselines' thresholds.
    other = load_dataset("fashion-mnist", seed=cfg.seed, val_fraction=cfg.val_fraction, test_limit=3000)
    again, passes2 = evaluate_one_class(run, other, bundle, quantile=0.9)
    assert again["score"] == result["score"] and again["threshold"] == pytest.approx(result["threshold"])
    assert again["score_choice"]["val_auroc"] == pytest.approx(result["score_choice"]["val_auroc"])
    for k in ("pca", "iforest", "mse", "ssim"):
        assert passes2.thresholds[k] == pytest.approx(passes.thresholds[k])
    assert again["split"]["test_normal"] + again["split"]["test_anomalous"] == 3000

    # The scores separate the classes (far better than chance), and the flags follow the threshold.
    assert result["methods"][result["score"]]["auroc"] > 0.8
    s = passes.scores[result["score"]]
    assert result["methods"][result["score"]]["flagged"] == pytest.approx(float((s > det.threshold).mean()))


def test_a_run_of_every_class_is_refused_with_the_fix(tmp_path, data_root) -> None:
    run = Run(tmp_path / "all-classes")
    run.path.mkdir()
    atomic_write_text(run.config_file, dump_yaml(resolve(overrides=dict(classes=["Trouser", "Bag"]))))
    with pytest.raises(RunError, match="2 classes, not one.*aelab anomaly --normal"):
        evaluate_one_class(run)


def test_detector_round_trips_through_the_run_folder(one_class_run) -> None:
    run, _ = one_class_run
    det = Detector.load(run)
    assert det is not None and det.reference is not None and det.reference.shape == (600, 8)
    model = run.load_model("best")
    x = load_dataset("fashion-mnist", test_limit=50).test.images
    a = det.scores(model, x)
    assert set(a) == set(det.kinds) and all(np.isfinite(v).all() and len(v) == 50 for v in a.values())
    assert a[det.score] == pytest.approx(det.anomaly_score(model, x))
