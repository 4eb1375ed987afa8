"""MLflow: the real mlflow package on a SQLite store in a temporary folder, read back with ``MlflowClient``: the
parameters, the metric histories, the artifacts, the tags; a resumed run continues the same MLflow run with one
history; a run stopped by Ctrl-C is KILLED, one killed by SIGKILL is marked on resuming; an unreachable server
costs one warning and the run goes on; without the package, one line and exit code 2 before any data is read."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import aelab.experiments.jobs as jobs
from aelab.cli import main
from aelab.errors import Interrupted
from aelab.experiments.jobs import resume_job, train_job
from tests.conftest import aelab_exe
from tests.tracking.common import (
    ARGS,
    EPOCH_TAGS,
    ctrl_c_after,
    events,
    history,
    mlflow_client,
    mlflow_run,
    small,
    steps,
    train_killed,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, inside MLflow's store


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, dict]:
    runs = tmp_path_factory.mktemp("runs")
    run, metrics = train_job(small(epochs=2, track=["mlflow"], report=True), out=runs / "ml", progress=False)
    assert metrics is not None
    return runs, metrics


def test_parameters_metrics_tags_and_artifacts(tracked: tuple[Path, dict]) -> None:
    runs, metrics = tracked
    client = mlflow_client(runs)
    found = mlflow_run(client, "ml")
    assert found.info.status == "FINISHED"
    assert found.data.params["latent"] == "8" and found.data.params["model"] == "conv-modified"
    assert found.data.params["epochs"] == "2" and "tracking_uri" not in found.data.params
    for key in EPOCH_TAGS:
        assert history(client, found.info.run_id, key) == [1, 2], key
    assert found.data.metrics["test/ssim"] == pytest.approx(metrics["autoencoder"]["overall"]["ssim"], rel=1e-9)
    assert found.data.metrics["pca/ssim"] == pytest.approx(metrics["pca"]["overall"]["ssim"], rel=1e-9)
    assert found.data.metrics["test/trustworthiness"] == pytest.approx(
        metrics["autoencoder"]["overall"]["trustworthiness"], rel=1e-9)
    assert "test_class/Trouser/ssim" in found.data.metrics
    data = json.loads((runs / "ml" / "data.json").read_text())
    tags = found.data.tags
    assert tags["aelab.data.fingerprint"] == data["fingerprint"]["content"]
    assert tags["aelab.data.source"] == data["source"] and tags["aelab.precision"] == "fp32"
    assert tags["aelab.precision_reason"] == "--precision fp32" and tags["aelab.machine.cores"]
    files = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"metrics.json", "report.html", "config.yaml", "data.json", "history.csv", "facts.json", "results.txt",
            "model", "figures", "images"} <= files
    assert [a.path for a in client.list_artifacts(found.info.run_id, "model")] == ["model/best.safetensors"]
    images = [a.path for a in client.list_artifacts(found.info.run_id, "images") if a.path.endswith(".png")]
    assert len(images) == 2 and all("val~reconstructions+step+" in p for p in images)
    record = json.loads((runs / "ml" / "tracking.json").read_text())["mlflow"]
    assert record == {"uri": f"sqlite:///{runs.absolute() / 'mlflow.db'}", "run_id": found.info.run_id}
    assert (runs / "mlartifacts" / found.info.run_id).is_dir()  # the artifacts beside the store


def test_ctrl_c_kills_the_run_and_resuming_continues_it(tmp_path: Path, data_root: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    client = mlflow_client(tmp_path)
    with monkeypatch.context() as m:
        ctrl_c_after(m, 1)
        with pytest.raises(Interrupted):
            train_job(small(track=["mlflow"]), out=out, progress=False, evaluate=False)
    first = mlflow_run(client, "run")
    assert first.info.status == "KILLED" and history(client, first.info.run_id, "train/loss") == [1]
    resume_job(out, progress=False, evaluate=False)
    again = mlflow_run(client, "run")  # still one MLflow run of that name
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    for key in EPOCH_TAGS:
        assert history(client, again.info.run_id, key) == [1, 2, 3], key


@pytest.mark.parametrize("kill", ["after-epoch-1-logged", "before-epoch-2-logged"])
def test_a_killed_run_is_marked_and_resumed_with_one_history(kill: str, tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    killed = train_killed(kill, out, "--track", "mlflow", "--no-eval")
    assert killed.returncode == -9, killed.stderr[-2000:]
    client = mlflow_client(tmp_path)
    dead = mlflow_run(client, "run")
    assert dead.info.status == "RUNNING"  # what a killed process leaves: nothing could close it
    resumed = subprocess.run([aelab_exe(), "train", "--resume", str(out), "--no-eval", "-q"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = mlflow_run(client, "run")
    assert run.info.run_id == dead.info.run_id and run.info.status == "FINISHED"
    assert "killed or crashed" in run.data.tags["aelab.interrupted"]
    for key in EPOCH_TAGS:
        assert history(client, run.info.run_id, key) == [1, 2, 3], key


def test_evaluating_a_killed_run_logs_its_results_and_marks_it_killed(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    killed = train_killed("after-epoch-1-logged", out, "--track", "mlflow,tensorboard", "--no-eval")
    assert killed.returncode == -9, killed.stderr[-2000:]
    evaluated = subprocess.run([aelab_exe(), "evaluate", str(out)], capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "warning" not in evaluated.stderr, evaluated.stderr
    client = mlflow_client(tmp_path)
    run = mlflow_run(client, "run")
    assert run.info.status == "KILLED" and "killed or crashed" in run.data.tags["aelab.interrupted"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["test/ssim"] == pytest.approx(metrics["autoencoder"]["overall"]["ssim"], rel=1e-9)
    assert history(client, run.info.run_id, "train/loss") == [1]
    assert "metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    acc = events(out)
    assert steps(acc, "test/ssim") == [1] and steps(acc, "train/loss") == [1]


def test_a_run_killed_in_its_first_epoch_and_started_again_leaves_no_run_running(tmp_path: Path,
                                                                                 data_root: Path) -> None:
    out = tmp_path / "run"
    killed = train_killed("in-epoch-1", out, "--track", "mlflow", "--no-eval")
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = subprocess.run([aelab_exe(), "train", *ARGS, "--track", "mlflow", "--no-eval", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "starting it again" in again.stderr, again.stderr[-2000:]
    client = mlflow_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("aelab").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    (old,) = [r for r in runs if r.info.status == "KILLED"]
    assert "started again" in old.data.tags["aelab.interrupted"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_one_warning_and_the_run_goes_on(tmp_path: Path, data_root: Path) -> None:
    t0 = time.perf_counter()
    result = subprocess.run([aelab_exe(), "train", *ARGS, "--epochs", "1", "--no-eval", "--track", "mlflow",
                             "--tracking-uri", f"http://127.0.0.1:{_closed_port()}", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2, result.stderr  # the failure, then what was not logged
    assert "mlflow tracking failed at the start" in lines[0] and "the training goes on" in lines[0]
    assert "mlflow did not log epoch 1" in lines[1]
    assert (tmp_path / "run" / "last.safetensors").is_file()
    assert time.perf_counter() - t0 < 120


def test_without_the_package_one_line_and_exit_2_before_the_data(tmp_path: Path, data_root: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "aelab.tracking.mlflow", raising=False)
    monkeypatch.setattr(jobs, "load_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    result = CliRunner().invoke(main, ["train", *ARGS, "--track", "tensorboard,mlflow", "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --track mlflow needs the mlflow package")
    assert "pip install 'aelab[track]'" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_failing_tracker_never_stops_the_training(tmp_path: Path, data_root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk or a broken backend in the middle of a run: one warning, the backend dropped, the rest logged by
    the other backend, and the end says what was missing."""
    from aelab.tracking.tensorboard import TensorBoardTracker

    def full(self: object, step: int, *args: object) -> None:
        if step == 2:
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(TensorBoardTracker, "log_epoch", full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, _ = train_job(small(track=["tensorboard", "mlflow"]), out=tmp_path / "run", progress=False,
                           evaluate=False)
    said = [str(w.message) for w in caught if "tensorboard" in str(w.message)]
    assert len(said) == 2, said
    assert said[0].startswith("tensorboard tracking failed at epoch 2 (OSError: [Errno 28] No space left on device)")
    assert said[1].startswith("tensorboard did not log epochs 2-3")
    client = mlflow_client(tmp_path)
    found = mlflow_run(client, "run")
    assert history(client, found.info.run_id, "train/loss") == [1, 2, 3] and found.info.status == "FINISHED"
    assert run.stopped() == "completed"
