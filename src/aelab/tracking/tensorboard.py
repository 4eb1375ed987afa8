"""The TensorBoard backend: event files written with PyTorch's ``SummaryWriter`` in the run folder itself
(``Run.tensorboard``), so that ``tensorboard --logdir runs`` shows every run of a runs folder under its name.

The global step is the epoch. A resumed run writes a new event file in the same folder with ``purge_step`` one past
the last epoch the files already hold (read back from them): whatever an earlier session logged past it is hidden,
and the fan-out logs the epochs in between again from the history, so the steps run 1, 2, ... N with none twice
and none missing. The configuration is the run's hparams (the HParams dashboard compares runs by them); the
session's end is recorded there as success or failure (an interrupted run, which will resume, records none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from aelab.runs import Run
from aelab.tracking.tracker import FINISHED, Tracker

EPOCH_TAG = "train/loss"  # every logged epoch has it: the tag a resumed run reads back to find where the log ends
FLUSH_SECONDS = 30
# TensorBoard keeps the first end a run records (its reader keeps a tag's first metadata), and an interrupted or
# failed run may be resumed to a success: so only a finished run records its end.
STATUS = {FINISHED: api_pb2.STATUS_SUCCESS}


def logged_epochs(files: list[Path]) -> set[int]:
    """The epochs the event files hold (``EPOCH_TAG``'s steps), less those a later session purged. A file cut short
    by a kill is read up to its last whole record."""
    steps: set[int] = set()
    for path in files:
        try:
            for event in EventFileLoader(str(path)).Load():
                if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                    steps = {s for s in steps if s < event.step}  # what a purge_step hides
                elif event.HasField("summary") and any(v.tag == EPOCH_TAG for v in event.summary.value):
                    steps.add(int(event.step))
        except Exception:  # a damaged file: what was read of it counts
            continue
    return steps


def hparam_value(value: Any) -> int | float | str | bool | None:
    """A configuration value as the HParams dashboard takes it: numbers and names as they are, lists joined."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return value if value is None or isinstance(value, int | float | str | bool) else str(value)


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: SummaryWriter | None = None
        self.run: Run | None = None
        self.step = 0  # the last epoch logged

    def start(self, run: Run, config: dict[str, Any], facts: dict[str, Any], epoch: int = 0) -> int:
        self.run = run
        files = run.event_files()
        held = min(max(logged_epochs(files), default=0), epoch) if files else None
        self.writer = SummaryWriter(log_dir=str(run.tensorboard), purge_step=None if held is None else held + 1,
                                    flush_secs=FLUSH_SECONDS)
        if held is None:  # the run's first session: its parameters and facts, at step 0
            values = {k: hparam_value(v) for k, v in config.items()} | {"parameters": facts.get("parameters")}
            _, start_info, _ = hparams(values, {})
            self.writer.file_writer.add_summary(start_info)
            self.writer.add_text("facts", "\n".join(f"    {k}: {v}" for k, v in facts.items()), 0)
        self.step = held or 0
        return self.step

    def log_epoch(self, step: int, scalars: dict[str, float], images: dict[str, np.ndarray]) -> None:
        assert self.writer is not None
        self.step = step
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        for tag, image in images.items():
            self.writer.add_image(tag, image, step, dataformats="HW" if image.ndim == 2 else "HWC")
        self.writer.flush()  # so that TensorBoard shows the epoch now, and a write error shows here

    def log_final(self, step: int, metrics: dict[str, float], artifacts: list[Path], summary: str) -> None:
        assert self.writer is not None
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        if summary:
            self.writer.add_text("results", "\n".join("    " + line for line in summary.splitlines()), step)
        self.writer.flush()  # the files (report, model) are in the run folder beside the event files

    def note(self, key: str, text: str) -> None:
        assert self.writer is not None
        self.writer.add_text(key, text, self.step)
        self.writer.flush()

    def end(self, status: str) -> None:
        if self.writer is None:
            return
        if status in STATUS:
            content = plugin_data_pb2.HParamsPluginData(
                session_end_info=plugin_data_pb2.SessionEndInfo(status=STATUS[status]),
                version=metadata.PLUGIN_DATA_VERSION)
            meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
                plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()))
            self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG,
                                                                             metadata=meta)]))
        self.writer.close()
        self.writer = None

    def where(self) -> str:
        assert self.run is not None
        return f"tensorboard --logdir {self.run.path.parent}"
