"""What a training is about to do, said once at its start: the model and its size, the data, the precision (and
whether ``auto`` chose it), the threads, the budget, the run folder and the trackers.

The same facts are printed (``block``), kept in the run folder (``Run.facts``: the facts of the latest training
session; the configuration stays in ``config.yaml`` and the data in ``data.json``, not copied here) and given to
the trackers (parameters and tags).
"""

from __future__ import annotations

import platform
import socket
import time
from typing import Any, Protocol

import torch

from aelab._version import __version__
from aelab.config import RunConfig
from aelab.data import DataBundle, shape_text
from aelab.device import cores, cpu_model, native_bf16
from aelab.models import Autoencoder, count_parameters
from aelab.runs import Run


class TrainingView(Protocol):
    """What the facts read of a trainer (``training.Trainer``, which sits above this package)."""

    cfg: RunConfig
    model: Autoencoder
    bundle: DataBundle
    device: torch.device
    precision: str
    state: Any     # training.LoopState: epoch, batch, stopped
    streamed: bool

    @property
    def epochs(self) -> int: ...


def precision_reason(cfg: RunConfig, device: torch.device, chosen: str) -> str:
    """Why the training runs in ``chosen``: the option given, or what ``--precision auto`` found here."""
    if cfg.precision != "auto":
        return f"--precision {cfg.precision}"
    if not native_bf16(device):
        return f"auto: no native bf16 on this {'GPU' if device.type == 'cuda' else device.type.upper()}"
    if device.type != "cpu":
        return "auto: the GPU has bf16 units"
    return f"auto: the probe measured bf16 {'faster' if chosen == 'bf16' else 'no faster'} than fp32 here"


def machine(device: torch.device) -> dict[str, Any]:
    """The machine a training runs on: host, CPU, cores, GPU, versions."""
    out: dict[str, Any] = {"host": socket.gethostname(), "cpu": cpu_model(), "cores": cores(),
                           "python": platform.python_version(), "torch": torch.__version__, "aelab": __version__}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def family(trainer: TrainingView) -> str:
    """The model family trained (the configuration may leave it to the data: ``config.settle_model``)."""
    return str(trainer.model.hparams.get("model") or trainer.cfg.model)


def training_facts(trainer: TrainingView, trackers: list[str]) -> dict[str, Any]:
    """The facts of the training ``trainer`` is about to run (``facts.json``; what config.yaml and data.json hold
    is not repeated)."""
    cfg, st = trainer.cfg, trainer.state
    return {"model": family(trainer), "parameters": count_parameters(trainer.model), "device": str(trainer.device),
            "precision": trainer.precision,
            "precision_reason": precision_reason(cfg, trainer.device, trainer.precision),
            "threads": cfg.threads or f"shared, up to {cores()}", "streamed": bool(trainer.streamed),
            "epochs": trainer.epochs, "resumed_at_epoch": st.epoch if (st.epoch or st.batch) else None,
            "trackers": trackers, "machine": machine(trainer.device), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def block(facts: dict[str, Any], trainer: TrainingView, run: Run, where: list[str]) -> str:
    """The facts as the few lines printed when a training starts; ``where``: each tracker's place to look."""
    cfg, bundle, st = trainer.cfg, trainer.bundle, trainer.state
    n = {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)}
    budget = f"{facts['epochs']} epoch{'s' * (facts['epochs'] != 1)}" + (
        f" (of {cfg.epochs}: fitted to the time budget)" if facts["epochs"] != cfg.epochs else "")
    if cfg.max_minutes:
        budget += f", at most {cfg.max_minutes:g} minutes"
    if cfg.patience:
        budget += f", early stopping after {cfg.patience} epochs without improvement"
    if st.epoch or st.batch:
        budget += f"; resuming at epoch {st.epoch + 1}" + (f", batch {st.batch + 1}" if st.batch else "")
    threads = f"{cfg.threads}" if cfg.threads else f"up to {cores()}, shared with the machine's other work"
    lines = [
        f"model      {facts['model']}, latent {cfg.latent}, {facts['parameters']:,} parameters",
        f"data       {bundle.name}: {n['train']:,} train / {n['val']:,} validation / {n['test']:,} test images of "
        f"{shape_text(bundle.shape)}{' (read from disk)' if trainer.streamed else ''}, from {bundle.source}",
        f"precision  {facts['precision']} ({facts['precision_reason']}) on {facts['device']}, threads {threads}",
        f"budget     {budget}",
        f"run folder {run.path}",
        f"tracking   {'; '.join(where) if where else 'none (--track tensorboard,mlflow to watch it)'}",
    ]
    return "\n".join(lines)
