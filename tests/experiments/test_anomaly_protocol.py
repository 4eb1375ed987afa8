"""``aelab anomaly`` end to end on real data: a small one-class run beats a random scorer and the baselines sit
beside it in one table; a rerun reuses the finished run; the protocol over several classes writes the mean."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from aelab.cli.app import main
from aelab.experiments import anomaly as A
from aelab.experiments.anomaly import class_slug, normal_classes

SMALL = ["--model", "dense", "--width", "0.25", "--latent", "8", "--epochs", "2", "--train-limit", "600",
         "--threads", "1", "-q"]


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def bag_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("anomaly") / "bag"
    res = cli("anomaly", "--normal", "Bag", "--out", out, *SMALL)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_one_class_run_beats_chance_beside_its_baselines(bag_run) -> None:
    out, output = bag_run
    result = json.loads((out / "bag" / "anomaly.json").read_text())
    assert result["normal"] == "Bag" and result["split"]["test_normal"] == 1000
    methods = result["methods"]
    assert {"mse", "ssim", "knn", "mse+knn", "ssim+knn", "pca", "iforest"} <= set(methods)
    chosen = methods[result["score"]]
    assert chosen["auroc"] > 0.75, chosen  # a random scorer has 0.5; 2 epochs on 600 images already separate
    assert 0 < chosen["precision"] <= 1 and 0 < chosen["recall"] <= 1
    # The threshold flags about 1 - quantile of the normal test images (it was set on normal validation images).
    fpr = chosen["false_positive_rate"]
    assert 0.0 < fpr < 0.2
    assert "AUROC" in output and "baseline: PCA reconstruction MSE" in output and "Isolation Forest" in output
    for name in ("anomaly_roc.png", "anomaly_hist.png", "anomaly_extremes.png"):
        assert (out / "bag" / "figures" / name).stat().st_size > 5000
    rows = list(csv.DictReader((out / "anomaly.csv").open()))
    assert len(rows) == 1 and rows[0]["normal"] == "Bag"


def test_rerun_reuses_the_finished_run(bag_run) -> None:
    out, _ = bag_run
    before = (out / "bag" / "best.safetensors").stat().st_mtime_ns
    res = cli("anomaly", "--normal", "8", "--out", out, *SMALL, "--no-figures", "--quantile", "0.9")
    assert res.exit_code == 0, res.output
    assert (out / "bag" / "best.safetensors").stat().st_mtime_ns == before  # not trained again
    assert json.loads((out / "bag" / "anomaly.json").read_text())["quantile"] == 0.9


def test_all_classes_give_one_table_with_the_mean(tmp_path, data_root, monkeypatch) -> None:
    names = normal_classes("all", "fashion-mnist")
    assert len(names) == 10 and class_slug(names[0]) == "t-shirt-top"
    # The ten classes are measured in docs/anomaly.md; here the same loop over two of them.
    monkeypatch.setattr(A, "normal_classes", lambda normal, dataset, cfg=None: ["Trouser", "Sneaker"])
    got = A.anomaly_job("all", out=tmp_path, progress=False,
                        overrides=dict(model="dense", width=0.25, latent=4, epochs=1, train_limit=300, threads=1))
    summary = got.summary
    assert [r["normal"] for r in summary["rows"]] == ["Trouser", "Sneaker"]
    assert summary["mean"]["auroc"] == pytest.approx(np.mean([r["auroc"] for r in summary["rows"]]))
    assert summary["mean"]["auroc_pca"] == pytest.approx(np.mean([r["auroc_pca"] for r in summary["rows"]]))
    text = (tmp_path / "anomaly.md").read_text()
    assert "**mean**" in text and "| Sneaker |" in text and "figures/auroc_by_class.png" in text
    assert (tmp_path / "figures" / "auroc_by_class.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "anomaly.json").read_text())
    assert len(saved["runs"]) == 2 and saved["wall_seconds"] > 0


def test_user_mistakes_are_one_line_errors(tmp_path, data_root) -> None:
    res = CliRunner().invoke(main, ["anomaly", "--normal", "Hat", "--out", str(tmp_path / "x"), *SMALL])
    assert res.exit_code == 2 and "unknown class 'Hat'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["anomaly", "--normal", "Bag", "--classes", "Bag", *SMALL])
    assert res.exit_code == 2 and "--classes does not apply" in res.output
    res = CliRunner().invoke(main, ["anomaly", "--normal", "Bag", "--quantile", "1.5", *SMALL])
    assert res.exit_code == 2 and "--quantile 1.5" in res.output
