"""kill -9 at any point of a training leaves a run that resumes to the weights of an uninterrupted run.

Each interrupted training runs in its own process: a small start-up script replaces one function of aelab
so that the process sends itself SIGKILL at a chosen point (before the first checkpoint, in the middle of an
epoch, between writing a checkpoint and renaming it into place), then ``aelab train --resume`` finishes the
run. CPU, fp32, one thread: the final weights must equal the uninterrupted run's exactly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aelab.checkpoints import load_checkpoint
from tests.conftest import aelab_exe

ARGS = ["--model", "conv-modified", "--latent", "8", "--width", "0.25", "--train-limit", "600", "--batch-size", "64",
        "--epochs", "3", "--patience", "0", "--precision", "fp32", "--threads", "1", "--no-report", "-q"]

# Start-up scripts: each wraps one aelab function so that the process kills itself at a point of the training.
KILLS = {
    "before-the-first-checkpoint": """
import aelab.training.trainer as T
def save(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
T.save_checkpoint = save
""",
    "mid-epoch": """
import aelab.training.trainer as T
calls = [0]
original = T.Trainer._batch
def batch(self, images):
    calls[0] += 1
    if calls[0] == 14:  # 10 batches an epoch: the 4th batch of epoch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, images)
T.Trainer._batch = batch
""",
    "during-a-checkpoint-write": """
import aelab.files as F
original = F.os.replace
calls = [0]
def replace(src, dst, *a, **k):
    if str(dst).endswith("last.safetensors"):
        calls[0] += 1
        if calls[0] == 3:  # the start, epoch 1, then epoch 2's last.safetensors: written, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return original(src, dst, *a, **k)
F.os.replace = replace
""",
}


def _train(out: Path, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    if kill is None:
        return subprocess.run([aelab_exe(), "train", *ARGS, "--no-eval", "--out", str(out)], capture_output=True,
                              text=True, timeout=600)
    script = ("import os, signal, sys\n" + KILLS[kill] +
              "from aelab.cli import main\nsys.argv = ['aelab'] + sys.argv[1:]\nmain()\n")
    return subprocess.run([sys.executable, "-c", script, "train", *ARGS, "--no-eval", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, meta = load_checkpoint(run / "last.safetensors")
    assert meta["loop"]["stopped"] == "completed" and meta["loop"]["epoch"] == 3
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("straight") / "run"
    result = _train(out)
    assert result.returncode == 0, result.stderr[-2000:]
    return _weights(out)


@pytest.mark.parametrize("kill", list(KILLS))
def test_kill_9_then_resume_reaches_the_uninterrupted_weights(kill: str, straight: dict[str, torch.Tensor],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = _train(out, kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "config.yaml").is_file()
    resumed = subprocess.run([aelab_exe(), "train", "--resume", str(out), "--no-eval", "-q"], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if kill == "before-the-first-checkpoint":
        assert "training it from the start" in resumed.stderr
    weights = _weights(out)
    assert weights.keys() == straight.keys()
    for name, value in straight.items():
        assert torch.equal(weights[name], value), name
    assert not list(out.glob(".*.tmp")), "a killed writer's temporary file was left behind"


def test_a_run_killed_in_its_first_epoch_can_be_started_again_with_train_out(tmp_path: Path, data_root: Path) -> None:
    """Seen: a run that never finished an epoch was a dead end ('the folder holds a run')."""
    out = tmp_path / "run"
    assert _train(out, "mid-epoch").returncode == -signal.SIGKILL  # killed in epoch 2: 1 finished epoch
    again = _train(out)
    assert again.returncode == 2 and "finished epoch" in again.stderr and "--resume" in again.stderr
    first = tmp_path / "first"
    killed = subprocess.run([sys.executable, "-c", "import os, signal, sys\n" + KILLS["mid-epoch"].replace(
        "== 14", "== 4") + "from aelab.cli import main\nsys.argv = ['aelab'] + sys.argv[1:]\nmain()\n", "train",
        *ARGS, "--no-eval", "--out", str(first)], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    restarted = subprocess.run([aelab_exe(), "train", *ARGS, "--lr", "1e-3", "--no-eval", "--out", str(first)],
                               capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "never finished an epoch; starting it again" in restarted.stderr
    assert "lr: 0.001" in (first / "config.yaml").read_text()
