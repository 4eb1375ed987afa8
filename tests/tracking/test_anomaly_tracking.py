"""A tracked anomaly study (``aelab anomaly --track mlflow``): in MLflow one run for the study with each one-class
training nested in it, and the study's run holding the table's figures (anomaly.json's) and its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aelab.cli.app import main
from aelab.experiments import anomaly as A
from tests.tracking.common import mlflow_client

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, inside MLflow's store
TINY = ["--model", "dense", "--width", "0.25", "--latent", "8", "--epochs", "1", "--train-limit", "300",
        "--threads", "1", "--no-figures", "-q"]


def test_a_study_is_one_run_with_its_one_class_runs_nested(tmp_path: Path, data_root: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "normal_classes", lambda normal, dataset, cfg=None: ["Trouser", "Bag"])
    out = tmp_path / "study"
    res = CliRunner().invoke(main, ["anomaly", "--normal", "all", "--out", str(out), "--track", "mlflow", *TINY],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "tracking failed" not in res.output
    table = json.loads((out / "anomaly.json").read_text())
    client = mlflow_client(tmp_path)  # the default store: beside the study's folder, like a training's
    runs = client.search_runs([client.get_experiment_by_name("aelab").experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("aelab.study") == str(out.absolute())]
    assert study.info.run_name == "study" and study.info.status == "FINISHED"
    nested = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id}
    assert set(nested) == {"trouser", "bag"} and len(runs) == 3
    for child in nested.values():
        assert child.info.status == "FINISHED" and child.data.metrics["train/loss"] > 0
        assert "test/ssim" in child.data.metrics and child.data.params["classes"] in ("Trouser", "Bag")
    metrics = study.data.metrics
    for row in table["rows"]:
        for key in ("auroc", "ap", "auroc_pca", "auroc_iforest"):
            assert metrics[f"anomaly/{row['normal']}/{key}"] == pytest.approx(row[key])
    for key in ("auroc", "ap", "auroc_pca", "auroc_iforest"):
        assert metrics[f"anomaly/mean/{key}"] == pytest.approx(table["mean"][key])
    files = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"anomaly.json", "anomaly.csv", "anomaly.md", "results.txt"} <= files
    # A rerun reuses the finished runs and continues the same study run: still one study, two nested runs.
    res = CliRunner().invoke(main, ["anomaly", "--normal", "all", "--out", str(out), "--track", "mlflow", *TINY],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    again = client.search_runs([client.get_experiment_by_name("aelab").experiment_id])
    assert len(again) == 3 and client.get_run(study.info.run_id).info.status == "FINISHED"
