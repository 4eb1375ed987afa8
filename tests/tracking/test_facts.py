"""What a training says it is about to do (issue 31, item 4), and how it is told where to log: ``--track`` (comma
separated or repeated), the config key ``track``, ``AELAB_TRACK``; a wrong name is one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aelab.cli import main
from aelab.config import resolve
from aelab.errors import ConfigError
from aelab.tracking.trackers import final_metrics, metric_name
from tests.conftest import aelab_exe
from tests.tracking.common import ARGS


def _block(stderr: str) -> dict[str, str]:
    """The facts block's lines by their first word."""
    heads = ("model", "data", "precision", "budget", "run", "tracking")
    return {line.split()[0]: line for line in stderr.splitlines() if line.split()[:1] and line.split()[0] in heads}


def test_every_training_starts_by_saying_what_it_will_do(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    args = [a for a in ARGS if a != "-q"]
    first = subprocess.run([aelab_exe(), "train", *args, "--epochs", "2", "--no-eval", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    facts = json.loads((out / "facts.json").read_text())
    said = _block(first.stderr)  # on stderr: the standard output keeps the results
    assert said["model"].split(None, 1)[1] == f"conv-modified, latent 8, {facts['parameters']:,} parameters"
    assert "fashion-mnist: 600 train / 60 validation / 10,000 test images of 28x28 grey, from" in said["data"]
    assert said["precision"].endswith("fp32 (--precision fp32) on cpu, threads 1")
    assert said["budget"].split(None, 1)[1] == "2 epochs"
    assert said["run"].split()[-1] == str(out)
    assert said["tracking"].endswith("none (--track tensorboard,mlflow to watch it)")
    assert "model " not in first.stdout and "epoch   1/2" in first.stdout
    assert facts["precision"] == "fp32" and facts["threads"] == 1 and facts["trackers"] == []
    assert facts["resumed_at_epoch"] is None and facts["machine"]["cores"] >= 1
    config = (out / "config.yaml").read_text()
    assert "parameters" not in config and "precision_reason" not in config  # the facts are not config


def test_a_quiet_training_says_nothing(tmp_path: Path, data_root: Path) -> None:
    quiet = subprocess.run([aelab_exe(), "train", *ARGS, "--epochs", "1", "--no-eval", "--out", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and not _block(quiet.stderr), quiet.stderr
    assert (tmp_path / "r" / "facts.json").is_file()


@pytest.mark.parametrize("given_as", [["--track", "mlflow,tensorboard"], ["--track", "tensorboard", "--track",
                                                                          "mlflow"]])
def test_track_comma_separated_or_repeated(given_as: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    import aelab.experiments.jobs as jobs

    seen = {}

    def stop(cfg, *a, **k):  # the job receives the resolved configuration: stop there
        seen["track"] = cfg.track
        raise ConfigError("stop")
    monkeypatch.setattr(jobs, "train_job", stop)
    result = CliRunner().invoke(main, ["train", *given_as, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and seen["track"] == ["tensorboard", "mlflow"]


def test_the_config_key_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AELAB_TRACK", raising=False)
    assert resolve().track is None
    config = tmp_path / "c.yaml"
    config.write_text("track: [mlflow]\ntracking-uri: http://tracking.example:5000\n")
    assert resolve(config_file=config).track == ["mlflow"]
    assert resolve(config_file=config).tracking_uri == "http://tracking.example:5000"
    monkeypatch.setenv("AELAB_TRACK", "tensorboard")
    assert resolve().track == ["tensorboard"]  # the variable: below every other source
    assert resolve(config_file=config).track == ["mlflow"]
    assert resolve(overrides={"track": "none"}).track == []
    monkeypatch.setenv("AELAB_TRACK", "wandb")
    with pytest.raises(ConfigError, match="unknown AELAB_TRACK 'wandb'; use tensorboard, mlflow"):
        resolve()


def test_an_unknown_tracker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--track", "wandb", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: unknown track 'wandb'; use tensorboard, mlflow, both "
                                     "(tensorboard,mlflow) or none")


# ------------------------------------------------------------------------------------------ metric names
MLFLOW_KEY = r"^[/\w.\- ]*$"


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=20))
def test_any_class_name_makes_a_metric_name_both_tools_take(name: str) -> None:
    import posixpath
    import re

    key = f"test_class/{metric_name(name)}/ssim"
    assert re.match(MLFLOW_KEY, key, flags=re.ASCII) and posixpath.normpath(key) == key


def test_the_final_metrics_flatten_every_section() -> None:
    metrics = {"autoencoder": {"overall": {"ssim": 0.9, "knn5": 0.8}, "per_class": {"T-shirt/top": {"ssim": 0.7,
                                                                                                    "n": 3}}},
               "pca": {"overall": {"ssim": 0.8}, "per_class": {}},
               "vae": {"elbo": -90.5, "iwae": -88.0, "kl_per_dim": [1.0, 2.0], "active_units": 5},
               "denoising": {"noisy": {"ssim": 0.5}, "autoencoder": {"ssim": 0.85}},
               "run": {"best_epoch": 3, "train_seconds": 12.5, "name": "x"}}
    assert final_metrics(metrics) == {
        "test/ssim": 0.9, "test/knn5": 0.8, "test_class/T-shirt_top/ssim": 0.7, "pca/ssim": 0.8, "vae/elbo": -90.5,
        "vae/iwae": -88.0, "vae/active_units": 5.0, "denoising/noisy/ssim": 0.5, "denoising/autoencoder/ssim": 0.85,
        "run/best_epoch": 3.0, "run/train_seconds": 12.5}
