"""The fan-out a training holds (``Trackers``): every backend asked for at once, each failure isolated.

Logging never stops a training: any exception from a backend (an unreachable server, a full disk, a bug) is one
warning line, that backend is dropped for the rest of the run, the training goes on, and at the end one more line
says what it did not log. Several processes (``--nproc``): only rank 0 is given trackers (``experiments.jobs``
makes them; the other ranks train with the empty ``Trackers()``), so one process logs.

What every backend gets: at the start the resolved configuration and the training's facts (``facts.py``); after
every epoch the train and validation loss, the learning rate, images per second, the validation SSIM and the grid
of fixed validation images beside their reconstructions (``samples.py``); at the end the test metrics beside
PCA's, per class, the latent quality (from ``metrics.json``), and the report, the metrics, the records and the
model as files.
"""

from __future__ import annotations

import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aelab.config import RunConfig
from aelab.errors import ConfigError, Interrupted, one_line
from aelab.evaluation import format_table
from aelab.files import write_json
from aelab.models import Autoencoder
from aelab.runs import Run
from aelab.tracking.facts import TrainingView, block, training_facts
from aelab.tracking.samples import ValidationSample
from aelab.tracking.tracker import FAILED, FINISHED, KILLED, Tracker

FAILED_CALL = object()  # what ``Trackers._call`` returns when the backend raised
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
EPOCH_SCALARS = {"train_loss": "train/loss", "val_loss": "val/loss", "lr": "train/lr",
                 "images_per_s": "train/images_per_s", "seconds": "train/seconds"}  # history.csv -> logged name


def open_trackers(cfg: RunConfig, study: str | None = None, model: bool | None = None) -> Trackers:
    """The backends ``cfg.track`` names, made and not yet started. A backend whose package is missing raises
    ``ConfigError`` naming the extra to install: early, before any data is loaded. ``study``: a study's name (a
    tuning study, an anomaly study's folder); in MLflow this run is nested in the study's run (the run tagged
    ``aelab.study`` with that name). ``model``: whether the model goes with the files at the end (default: not for
    a study's run, a tuning trial, whose study retrains the best)."""
    made: list[Tracker] = []
    for name in cfg.track or []:
        try:
            made.append(_backend(name, cfg, study))
        except ImportError as err:
            raise ConfigError(f"--track {name} needs the {PACKAGES[name]} package, which is not installed "
                              f"({one_line(err, 100)}); install it with: pip install 'aelab[track]'") from None
    return Trackers(made, model=study is None if model is None else model)


def _backend(name: str, cfg: RunConfig, study: str | None) -> Tracker:
    if name == "tensorboard":
        from aelab.tracking.tensorboard import TensorBoardTracker  # lazy: an optional extra, loaded when asked for

        return TensorBoardTracker()
    if name == "mlflow":
        from aelab.tracking.mlflow import MlflowTracker  # lazy: an optional extra, ~1 s to import

        return MlflowTracker(cfg.tracking_uri, study)
    raise ConfigError(f"unknown tracker {name!r}; use --track tensorboard, mlflow or both")


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The logged numbers of a history.csv row (finite ones: no validation split, no validation loss)."""
    out = {}
    for key, name in EPOCH_SCALARS.items():
        try:
            value = float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[name] = value
    return out


def metric_name(text: str) -> str:
    """A class name as part of a metric name both backends take (letters, digits, ``_ - . space``)."""
    name = re.sub(r"[^\w\-. ]", "_", str(text), flags=re.ASCII).strip()
    return name if name.strip(".") else "_" + name


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json as flat names: ``test/ssim`` beside ``pca/ssim``, ``test_class/<class>/ssim``, the latent quality
    (``test/knn5``, ``test/trustworthiness``), a VAE's ``vae/elbo``..., a denoising run's ``denoising/...``."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)

    for section, prefix in (("autoencoder", "test"), ("pca", "pca")):
        part = metrics.get(section) or {}
        for key, value in (part.get("overall") or {}).items():
            put(f"{prefix}/{key}", value)
        for cls, row in (part.get("per_class") or {}).items():
            for key, value in (row or {}).items():
                if key != "n":
                    put(f"{prefix}_class/{metric_name(cls)}/{key}", value)

    def walk(value: Any, name: str, depth: int) -> None:
        if isinstance(value, dict) and depth < 4:
            for key, item in value.items():
                walk(item, f"{name}/{metric_name(key)}", depth + 1)
        else:
            put(name, value)

    for section in ("vae", "denoising"):
        if isinstance(metrics.get(section), dict):
            walk(metrics[section], section, 0)
    for key in ("best_epoch", "train_seconds"):
        put(f"run/{key}", (metrics.get("run") or {}).get(key))
    return out


class Trackers:
    """Every backend of a training, used as one; empty (``Trackers()``) it does nothing and costs nothing."""

    def __init__(self, trackers: list[Tracker] | None = None, model: bool = True):
        self.active: list[Tracker] = list(trackers or [])
        self.model = model  # whether the model goes with the files at the end
        self.names = [t.name for t in self.active]
        self.logged: dict[str, int] = {}   # backend -> the last epoch it holds
        self.stopped: dict[str, str] = {}  # backend -> what it failed at
        self.final: set[str] = set()       # backends that logged the final results
        self.sample: ValidationSample | None = None
        self.results: dict[str, float] = {}  # numbers of the end besides metrics.json's (a tuning trial's score)
        self.files: list[Path] | None = None  # the files of the end, when not a run's own (a study's table)
        self.summary = ""  # the text table of the end, when not metrics.json's
        self.run: Run | None = None
        self.step = 0
        self.ended = False

    def __bool__(self) -> bool:
        return bool(self.active)

    def _call(self, tracker: Tracker, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` of ``tracker``, or ``FAILED_CALL`` after any exception: one warning, and the tracker is
        dropped."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the libraries' own warnings (deprecations) are not the user's
                return fn(*args)
        except Exception as err:
            self.active.remove(tracker)
            self.stopped[tracker.name] = what
            warnings.warn(f"{tracker.name} tracking failed at {what} ({one_line(err, 160)}); the training goes on "
                          f"without it", stacklevel=3)
            return FAILED_CALL

    # ------------------------------------------------------------------------------------------ the start
    def start(self, run: Run, cfg: RunConfig, trainer: TrainingView, progress: bool = True) -> Trackers:
        """Say what the training is about to do (printed when ``progress``, kept in ``Run.facts``), open every
        backend, and log again the epochs a backend lacks of a resumed run (from its history)."""
        self.run, st = run, trainer.state
        self.step = st.epoch
        facts = training_facts(trainer, self.names)
        write_json(run.facts, facts)
        record = trainer.bundle.record()
        data = {k: record[k] for k in ("dataset", "source", "shape", "images")} | {
            "fingerprint": record["fingerprint"].get("content")}
        if self.active and len(trainer.bundle.val):
            try:
                self.sample = ValidationSample(trainer.bundle.val.images, len(trainer.bundle.train))
            except Exception as err:  # never a reason to stop the training
                warnings.warn(f"the validation SSIM and reconstructions are not logged ({one_line(err, 160)})",
                              stacklevel=2)
        config = cfg.to_dict()
        for tracker in list(self.active):
            held = self._call(tracker, "the start", tracker.start, run, config, facts | {"data": data}, st.epoch)
            if held is not FAILED_CALL:
                self.logged[tracker.name] = min(int(held), st.epoch)
        for row in st.history:  # epochs a backend lacks: a kill between the checkpoint and the log, or tracking
            step = int(row["epoch"])  # asked for only on resuming
            lacking = [t for t in self.active if self.logged[t.name] < step]
            if lacking:  # the weights are this epoch's only for the last one, and only at an epoch's end
                model = trainer.model if step == st.epoch and st.batch == 0 else None
                self._log_epoch(lacking, step, row, model)
        if progress and not st.stopped:
            tqdm.write(block(facts, trainer, run, [t.where() for t in self.active]), file=sys.stderr)
        return self

    def reopen(self, run: Run, cfg: RunConfig) -> Trackers:
        """Open the backends of a run that is not training (``aelab evaluate``) to log its results and settle its
        state: a run killed while it trained is RUNNING in MLflow until then."""
        self.run, self.step = run, run.epochs_done()
        for tracker in list(self.active):
            held = self._call(tracker, "the start", tracker.start, run, cfg.to_dict(),
                              {"evaluated": time.strftime("%Y-%m-%d %H:%M:%S")}, self.step)
            if held is not FAILED_CALL:
                self.logged[tracker.name] = self.step
        return self

    # ------------------------------------------------------------------------------------------ every epoch
    def epoch_end(self, step: int, row: dict[str, Any], model: Autoencoder) -> None:
        """After epoch ``step`` (its history.csv row written): every backend logs it."""
        self.step = step  # also after every backend failed: the end says which epochs they missed
        if self.active:
            self._log_epoch(list(self.active), step, row, model)

    def _log_epoch(self, trackers: list[Tracker], step: int, row: dict[str, Any], model: Autoencoder | None) -> None:
        scalars, images = epoch_scalars(row), dict[str, np.ndarray]()
        if model is not None and self.sample is not None:
            try:
                ssim, grid = self.sample.measure(model)
                scalars["val/ssim"] = ssim
                images["val/reconstructions"] = grid
            except Exception as err:  # never a reason to stop the training
                self.sample = None
                warnings.warn(f"the validation SSIM and reconstructions are no longer logged ({one_line(err, 160)})",
                              stacklevel=3)
        for tracker in trackers:
            if self._call(tracker, f"epoch {step}", tracker.log_epoch, step, scalars, images) is not FAILED_CALL:
                self.logged[tracker.name] = step

    # ------------------------------------------------------------------------------------------ the end
    def log_final(self) -> None:
        """The results of the run, from its folder: the test metrics (metrics.json, when evaluated) and the files."""
        if not self.active or self.run is None:
            return
        run = self.run
        try:
            metrics = run.load_metrics() if run.metrics.is_file() else None
        except Exception:  # a damaged metrics.json: the files still go
            metrics = None
        flat = (final_metrics(metrics) if metrics else {}) | self.results
        summary = format_table(metrics) if metrics else self.summary
        own = (run.report, run.metrics, run.config_file, run.data_record, run.facts, run.history, run.figures,
               *[run.best] * self.model)
        files = [p for p in (own if self.files is None else self.files) if p.exists()]
        for tracker in list(self.active):
            if self._call(tracker, "the final results", tracker.log_final, self.step, flat, files,
                          summary) is not FAILED_CALL:
                self.final.add(tracker.name)

    def end(self, status: str) -> None:
        """Close every backend's run as ``status``; then say what a failed backend did not log."""
        if self.ended:
            return
        self.ended = True
        for tracker in list(self.active):
            self._call(tracker, "the end", tracker.end, status)
        for name, what in self.stopped.items():
            last, parts = self.logged.get(name, 0), []
            if self.step > last:
                parts.append(f"epoch {self.step}" if self.step == last + 1 else f"epochs {last + 1}-{self.step}")
            if status == FINISHED and name not in self.final:
                parts.append("the final results")
            parts.append(f"the end state ({status})")
            warnings.warn(f"{name} did not log {', '.join(parts)} (it failed at {what}); the run folder "
                          f"{self.run.path if self.run else ''} holds it all", stacklevel=2)

    def note(self, key: str, text: str) -> None:
        """A line about the run in every backend (a tag in MLflow, a text in TensorBoard)."""
        for tracker in list(self.active):
            self._call(tracker, f"the note {key!r}", tracker.note, key, text)

    @contextmanager
    def ending(self, success: str = FINISHED, halts: dict[type[BaseException], str] | None = None
               ) -> Iterator[Trackers]:
        """Around a training and its evaluation: on success the final results and ``success``; on Ctrl-C KILLED;
        on any other error FAILED (a resumed run continues the same tracked run). ``halts``: exceptions that stop
        a run on purpose (a pruned trial), each noted under its key, and KILLED."""
        try:
            yield self
        except tuple(halts or ()) as err:
            self.note(next(key for kind, key in (halts or {}).items() if isinstance(err, kind)), str(err))
            self.end(KILLED)
            raise
        except (KeyboardInterrupt, Interrupted):
            self.end(KILLED)
            raise
        except BaseException:
            self.end(FAILED)
            raise
        self.log_final()
        self.end(success)


def log_evaluation(run: Run) -> None:
    """After ``aelab evaluate RUN``: a tracked run's results logged to its backends, and its state settled there:
    FINISHED when its training had ended, KILLED when it had not (killed or interrupted while it trained, and
    evaluated at its best checkpoint). A backend that cannot be used here is one warning."""
    cfg = run.config()
    try:
        trackers = open_trackers(cfg)
    except ConfigError as err:
        warnings.warn(f"the results are not logged: {err}", stacklevel=2)
        return
    if trackers:
        with run.writing():
            with trackers.reopen(run, cfg).ending(FINISHED if run.stopped() else KILLED):
                pass
