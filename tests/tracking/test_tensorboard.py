"""TensorBoard: a real short run's event files read back with TensorBoard's own EventAccumulator (scalars, steps,
images, hparams, the final metrics), and runs stopped and resumed: the steps run 1..N, none twice, none missing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aelab.errors import Interrupted
from aelab.experiments.jobs import resume_job, train_job
from aelab.tracking.samples import GRID_COLUMNS, GRID_IMAGES, MIN_TILE
from tests.conftest import aelab_exe
from tests.tracking.common import EPOCH_TAGS, ctrl_c_after, events, hparams_of, small, steps, train_killed


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "tb"
    run, metrics = train_job(small(epochs=2, track=["tensorboard"]), out=out, progress=False)
    assert metrics is not None
    return out, metrics


def test_every_epoch_is_logged_at_its_step(tracked: tuple[Path, dict]) -> None:
    out, metrics = tracked
    acc = events(out)
    for tag in EPOCH_TAGS:
        assert steps(acc, tag) == [1, 2], tag
    history = (out / "history.csv").read_text().splitlines()[1:]
    logged = [e.value for e in acc.Scalars("train/loss")]
    assert logged == pytest.approx([float(line.split(",")[1]) for line in history], rel=1e-6)
    assert all(0 < e.value <= 1 for e in acc.Scalars("val/ssim"))
    images = acc.Images("val/reconstructions")
    assert [i.step for i in images] == [1, 2]
    rows = GRID_IMAGES // GRID_COLUMNS
    scale = max(1, MIN_TILE // 28)  # small images are enlarged by a whole factor
    assert images[0].height == scale * (rows * 28 + (rows - 1) * 3)
    assert images[0].width == scale * (GRID_COLUMNS * (2 * 28 + 1) + (GRID_COLUMNS - 1) * 3)


def test_the_final_metrics_hparams_and_facts(tracked: tuple[Path, dict]) -> None:
    out, metrics = tracked
    acc = events(out)
    ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
    assert acc.Scalars("test/ssim")[0].value == pytest.approx(ae["ssim"], rel=1e-6)
    assert acc.Scalars("pca/ssim")[0].value == pytest.approx(pca["ssim"], rel=1e-6)
    assert acc.Scalars("test/knn5")[0].step == 2
    cls = next(iter(metrics["autoencoder"]["per_class"]))
    assert acc.Scalars(f"test_class/{cls.replace('/', '_')}/ssim")[0].value == pytest.approx(
        metrics["autoencoder"]["per_class"][cls]["ssim"], rel=1e-6)
    session = hparams_of(acc)
    assert session["hparams"]["latent"] == 8 and session["hparams"]["model"] == "conv-modified"
    assert session["hparams"]["parameters"] == metrics["run"]["parameters"]
    assert session["status"] == 1  # STATUS_SUCCESS
    facts = json.loads((out / "facts.json").read_text())
    assert facts["parameters"] == metrics["run"]["parameters"] and facts["trackers"] == ["tensorboard"]
    assert "results" in {t.split("/")[0] for t in acc.Tags()["tensors"]}


def test_interrupted_and_resumed_the_steps_continue(tmp_path: Path, data_root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    cfg = small(track=["tensorboard"])
    with monkeypatch.context() as m:
        ctrl_c_after(m, 1)
        with pytest.raises(Interrupted):
            train_job(cfg, out=out, progress=False, evaluate=False)
    assert steps(events(out), "train/loss") == [1]
    resume_job(out, progress=False, evaluate=False)
    acc = events(out)
    for tag in EPOCH_TAGS:
        assert steps(acc, tag) == [1, 2, 3], tag
    assert [i.step for i in acc.Images("val/reconstructions")] == [1, 2, 3]
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # one file per session, read as one run


def test_killed_between_the_checkpoint_and_the_log_the_epoch_is_logged_on_resuming(tmp_path: Path,
                                                                                   data_root: Path) -> None:
    """kill -9 after epoch 2's checkpoint but before it was logged: the resumed run logs epoch 2 from the history
    (and its images from the checkpoint's weights), then 3: no gap."""
    out = tmp_path / "run"
    killed = train_killed("before-epoch-2-logged", out, "--track", "tensorboard", "--no-eval")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert steps(events(out), "train/loss") == [1]
    resumed = subprocess.run([aelab_exe(), "train", "--resume", str(out), "--no-eval", "-q"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    acc = events(out)
    for tag in EPOCH_TAGS:
        assert steps(acc, tag) == [1, 2, 3], tag
    assert [i.step for i in acc.Images("val/reconstructions")] == [1, 2, 3]


def test_killed_after_logging_an_epoch_nothing_is_logged_twice(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    killed = train_killed("after-epoch-1-logged", out, "--track", "tensorboard", "--no-eval")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = subprocess.run([aelab_exe(), "train", "--resume", str(out), "--no-eval", "-q"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    acc = events(out)
    assert steps(acc, "train/loss") == [1, 2, 3] and steps(acc, "val/ssim") == [1, 2, 3]
