"""The exact-resume check several tests make: one run trained straight through, one interrupted by a real Ctrl-C
after epoch 1 and resumed; and the model weights of a checkpoint, to compare the two."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from aelab.checkpoints import load_checkpoint
from aelab.errors import Interrupted
from aelab.runs import Run
from aelab.training import Trainer


def model_weights(path: Any) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def straight_and_resumed(cfg: Any, bundle: Any, folder: Path) -> tuple[Run, Run]:
    """(straight, parted) run folders under ``folder``: ``cfg`` trained without a stop, and trained with a SIGINT
    at the end of epoch 1 (the checkpoint then holds epoch 1) and resumed to the end."""
    straight = Run(folder / "straight")
    straight.path.mkdir()
    Trainer(cfg, straight, bundle=bundle, progress=False).fit()
    parted = Run(folder / "parted")
    parted.path.mkdir()
    first = Trainer(cfg, parted, bundle=bundle, progress=False,
                    on_epoch_end=lambda st: os.kill(os.getpid(), signal.SIGINT))  # a real Ctrl-C
    with pytest.raises(Interrupted, match="resume with"):
        first.fit()
    assert load_checkpoint(parted.last)[1]["loop"]["epoch"] == 1
    Trainer(cfg, parted, bundle=bundle, progress=False, resume=True).fit()
    return straight, parted
