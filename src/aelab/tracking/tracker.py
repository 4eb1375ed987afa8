"""The interface of a tracking backend, and the states a tracked run ends in (MLflow's words)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from aelab.runs import Run

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class Tracker(ABC):
    """One backend (TensorBoard, MLflow). Any method may raise anything: the fan-out (``trackers.Trackers``) turns a
    failure into one warning line and stops using that backend, so a tracker never stops a training."""

    name: str = ""

    @abstractmethod
    def start(self, run: Run, config: dict[str, Any], facts: dict[str, Any], epoch: int = 0) -> int:
        """Open this run in the backend, or reopen it when the run resumes. ``config``: the resolved configuration
        (the parameters), ``facts``: what the training runs with (``facts.training_facts``), ``epoch``: the epochs
        the run has done. Returns the last epoch the backend already holds (0 for a new run): the fan-out logs the
        epochs after it again from the run's history, so no epoch is missing and none is logged twice."""

    @abstractmethod
    def log_epoch(self, step: int, scalars: dict[str, float], images: dict[str, np.ndarray]) -> None:
        """The numbers of epoch ``step`` (the global step is the epoch) and its images (uint8, (H, W) or (H, W, 3))."""

    @abstractmethod
    def log_final(self, step: int, metrics: dict[str, float], artifacts: list[Path], summary: str) -> None:
        """The test metrics (flat names), the run's files worth keeping (report, metrics, model) and a short text
        table of the results, after the evaluation."""

    @abstractmethod
    def note(self, key: str, text: str) -> None:
        """A line about the run that is no number (a tuning trial pruned, and why)."""

    @abstractmethod
    def end(self, status: str) -> None:
        """Close the run as ``FINISHED``, ``FAILED`` or ``KILLED``."""

    @abstractmethod
    def where(self) -> str:
        """Where to look at what it logged, in a few words (shown when the training starts)."""
