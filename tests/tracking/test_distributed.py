"""Several processes (``--nproc 2``, DDP): rank 0 alone logs: one event file, one MLflow run, every epoch once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import aelab_exe
from tests.tracking.common import ARGS, EPOCH_TAGS, events, history, mlflow_client, mlflow_run, steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, inside MLflow's store


def test_two_processes_log_once(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    args = [a for a in ARGS if a not in ("--threads", "1")]  # each rank takes its share of the cores
    result = subprocess.run([aelab_exe(), "train", *args, "--epochs", "2", "--no-eval", "--nproc", "2", "--track",
                             "tensorboard,mlflow", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    acc = events(out)
    for tag in EPOCH_TAGS:
        assert steps(acc, tag) == [1, 2], tag
    client = mlflow_client(tmp_path)
    run = mlflow_run(client, "run")
    assert run.info.status == "FINISHED" and history(client, run.info.run_id, "val/ssim") == [1, 2]
