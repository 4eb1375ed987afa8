"""The tools' own servers on a tracked run: ``tensorboard --logdir`` and ``mlflow ui --backend-store-uri``, each
started on 127.0.0.1 on a free port by a fixture, asked about the run over HTTP, and stopped after."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aelab.experiments.jobs import train_job
from tests.tracking.common import small

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    train_job(small(epochs=2, track=["tensorboard", "mlflow"]), out=folder / "served", progress=False,
              evaluate=False)
    return folder


def _serve(args: list[str], ready: str, log: Path, limit: float = 90) -> Iterator[str]:
    """Start a server, wait until GET ``ready`` answers, yield its address, stop it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen([*args, "--host", "127.0.0.1", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + limit
        while True:
            try:
                _request(base + ready, timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{args[0]} did not answer on {base}: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:  # the server and its workers: its own process group
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def tensorboard(runs: Path, tmp_path: Path) -> Iterator[str]:
    yield from _serve([str(BIN / "tensorboard"), "--logdir", str(runs), "--reload_interval", "1"], "/data/runs",
                      tmp_path / "tensorboard.log")


@pytest.fixture
def mlflow_ui(runs: Path, tmp_path: Path) -> Iterator[str]:
    yield from _serve([str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{runs / 'mlflow.db'}",
                       "--workers", "1"], "/api/2.0/mlflow/experiments/search?max_results=1",
                      tmp_path / "mlflow.log")


def test_tensorboard_serves_the_run(tensorboard: str) -> None:
    deadline = time.monotonic() + 60
    while "served" not in _request(tensorboard + "/data/runs") and time.monotonic() < deadline:
        time.sleep(1)  # the first load of the log folder
    assert _request(tensorboard + "/data/runs") == ["served"]
    tags = _request(tensorboard + "/data/plugin/scalars/tags")
    assert {"train/loss", "val/loss", "val/ssim", "train/lr"} <= set(tags["served"])
    series = _request(tensorboard + "/data/plugin/scalars/scalars?run=served&tag=train%2Floss")
    assert [step for _, step, _ in series] == [1, 2]
    groups = _request(tensorboard + "/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                  "STATUS_RUNNING"], "colParams": [], "startIndex": 0, "sliceSize": 10})
    (group,) = groups["sessionGroups"]
    assert group["name"] == "served" and group["hparams"]["latent"] == 8
    assert group["hparams"]["model"] == "conv-modified"


def test_mlflow_ui_serves_the_run(mlflow_ui: str) -> None:
    experiments = _request(mlflow_ui + "/api/2.0/mlflow/experiments/search", {"max_results": 10})
    exp = next(e for e in experiments["experiments"] if e["name"] == "aelab")
    found = _request(mlflow_ui + "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})
    (run,) = found["runs"]
    assert run["info"]["run_name"] == "served" and run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m for m in run["data"]["metrics"]}
    assert metrics["train/loss"]["step"] == 2 and "val/ssim" in metrics
