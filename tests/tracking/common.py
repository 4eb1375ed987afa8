"""What the tracking tests share: a tiny real run's configuration, interrupting a training after an epoch (a real
Ctrl-C, or a real kill -9 in a process of its own), and reading TensorBoard's event files and MLflow's store back
with the tools' own readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from aelab.config import RunConfig, resolve
from aelab.training.trainer import Trainer

SMALL = dict(model="conv-modified", train_limit=600, epochs=3, latent=8, width=0.25, batch_size=64, threads=1,
             precision="fp32", patience=0, report=False)
ARGS = ["--model", "conv-modified", "--train-limit", "600", "--epochs", "3", "--latent", "8", "--width", "0.25",
        "--batch-size", "64", "--threads", "1", "--precision", "fp32", "--patience", "0", "--no-report", "-q"]
EPOCH_TAGS = ("train/loss", "val/loss", "train/lr", "train/images_per_s", "val/ssim")


def small(**over: Any) -> RunConfig:
    return resolve(overrides=SMALL | over)


def ctrl_c_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """A real SIGINT once epoch ``epoch`` is written and logged: the training stops there, resumably."""
    original = Trainer.write_history

    def write_history(self: Trainer) -> None:
        original(self)
        if self.state.epoch == epoch and not self._stop_requested:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(Trainer, "write_history", write_history)


# Start-up scripts for a training in a process of its own that kills itself (SIGKILL) at a point of its epochs.
_AT_EPOCH_END = """
import aelab.tracking.trackers as T
original = T.Trackers.epoch_end
def epoch_end(self, step, row, model):
    {body}
    return original(self, step, row, model)
T.Trackers.epoch_end = epoch_end
"""
KILLS = {
    "after-epoch-1-logged": _AT_EPOCH_END.format(body="if step == 1:\n        original(self, step, row, model)\n"
                                                      "        os.kill(os.getpid(), signal.SIGKILL)"),
    "before-epoch-2-logged": _AT_EPOCH_END.format(body="if step == 2:\n        os.kill(os.getpid(), signal.SIGKILL)"),
    "in-epoch-1": """
import aelab.training.trainer as T
calls, original = [0], T.Trainer._batch
def batch(self, images):
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, images)
T.Trainer._batch = batch
""",
}


def train_killed(kill: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``aelab train ARGS --out OUT`` in a new process that SIGKILLs itself at ``kill``."""
    script = ("import os, signal, sys\n" + KILLS[kill] +
              "from aelab.cli import main\nsys.argv = ['aelab'] + sys.argv[1:]\nmain()\n")
    return subprocess.run([sys.executable, "-c", script, "train", *ARGS, *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------ reading back
def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def hparams_of(acc: EventAccumulator) -> dict[str, Any]:
    """The session's hparams and its end status, as TensorBoard's HParams dashboard reads them."""
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()}
    end = content.get("_hparams_/session_end_info")
    status = plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info.status if end else None
    return {"hparams": values, "status": status}


def mlflow_client(runs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{runs.absolute() / 'mlflow.db'}")


def mlflow_run(client: MlflowClient, name: str) -> Any:
    """The one MLflow run named ``name`` in aelab's experiment."""
    exp = client.get_experiment_by_name("aelab")
    found = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(found) == 1, [r.info.run_name for r in found]
    return found[0]


def history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))
