"""The jobs behind ``aelab train``: a new run (train, evaluate, report), a resumed one, and ``ensure_run``.

A new run goes only into a new or empty folder, or one holding a run (``Run.is_run``: aelab's mark) that never
finished an epoch, which is started again: then exactly the files aelab writes in a run (``Run.files``) are
deleted, nothing of anyone else's. A resumed run continues its training where it stopped, or, when its training
had ended but the evaluation or report had not (killed or interrupted there), makes what is missing.

Experiments (the tuned model's retraining, the study) are made of many runs; rerunning one must not redo the
runs that are done. ``ensure_run`` is that rule for one folder: skip it when finished, resume it when
interrupted, train it when new.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from aelab.config import Notice, RunConfig, dump_yaml, settle_model, size_warning
from aelab.data import SHAPE, load_dataset, shape_text
from aelab.data.own import check_enough, is_own
from aelab.errors import ConfigError, Interrupted, RunError
from aelab.evaluation import evaluate_run, evaluate_run_passes
from aelab.files import atomic_write_text
from aelab.report import write_report
from aelab.runs import Run
from aelab.tracking import open_trackers
from aelab.training import Trainer
from aelab.training.distributed import make_trainer


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    name = cfg.name or f"{cfg.dataset_name}-{cfg.model_label}-{cfg.latent}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(root) / name


def _restart_needed(run: Run) -> bool:
    """Whether ``run.path`` may take a new run: no when it cannot be written, holds files that aelab did not make
    a run of, or holds a run with finished epochs (an ``AelabError`` naming the fix); True when it holds a run
    that never finished an epoch (killed, crashed or diverged in its first epoch), which is started again; False
    for a new or empty folder. Reads only: nothing is written or deleted here."""
    run.check_place()
    entries = run.entries()
    if not entries:
        return False
    if not run.is_run():
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunError(f"{run.path} already holds files that are not an aelab run ({shown}); give a new or empty "
                       f"folder with --out")
    done = run.epochs_done()
    if done:
        raise RunError(f"{run.path} already holds a run ({done} finished epoch{'s' * (done != 1)}); resume it with "
                       f"'aelab train --resume {run.path}' or choose another --out")
    return True


def train_job(cfg: RunConfig, out: str | Path | None = None, progress: bool = True,
              evaluate: bool = True, study: str | None = None) -> tuple[Run, dict[str, Any] | None]:
    """Make a new run folder for ``cfg``, train it, evaluate it (and write its report when asked).

    ``out`` must be new, empty, or hold a run that never finished an epoch (it is then started again). ``study``:
    the study this run is part of (an anomaly study): its tracked run is nested in the study's (MLflow).
    """
    cfg.validate()
    trackers = open_trackers(cfg, study, model=True)  # --track without its package: one line, before the data is loaded
    if out:
        _restart_needed(Run(Path(out)))  # early, so that a wrong --out fails before the data is loaded
    # Load the data before the folder exists, so that a data error leaves nothing behind.
    bundle = load_dataset(cfg.dataset, **cfg.data_kwargs(), progress=progress)
    cfg, chosen = settle_model(cfg, bundle.shape)  # no --model: the default for these images
    for line, kind in ((chosen, Notice), (size_warning(cfg.model or "", bundle.shape), UserWarning)):
        if line:  # one line each: the model chosen for the data; a model built for ~28x28 on larger images
            warnings.warn(line, kind, stacklevel=2)
    run = Run(Path(out) if out else default_run_dir(cfg))
    if is_own(cfg.dataset):
        check_enough(cfg.dataset, len(bundle.train) + len(bundle.val), len(bundle.test), cfg.test_fraction)
    pixels = bundle.shape[0] * bundle.shape[1] * bundle.shape[2]
    if cfg.latent > min(pixels, len(bundle.train)):
        what = (f"the {pixels} values of a {shape_text(bundle.shape)} image" if cfg.latent > pixels else
                f"the {len(bundle.train)} training images (the PCA baseline of the same latent size needs as many)")
        raise ConfigError(f"--latent {cfg.latent} is more than {what}; use --latent {min(pixels, len(bundle.train))} "
                          f"or less")
    if cfg.noise and bundle.shape != SHAPE:
        raise ConfigError(f"--noise (denoising) works on 28x28 grey images only for now, and {cfg.dataset_name} has "
                          f"{shape_text(bundle.shape)}; drop --noise, or give --image-size 28 --channels 1")
    created = not run.path.exists()
    with run.writing():
        if _restart_needed(run):  # again under the lock: another process may have started in between
            warnings.warn(f"{run.path} held a run that never finished an epoch; starting it again", stacklevel=2)
            run.clear()
        try:
            trainer = make_trainer(cfg, run, bundle=bundle, progress=progress)  # several processes: DDP
        except BaseException:
            if created:
                shutil.rmtree(run.path, ignore_errors=True)
            raise
        run.start()  # aelab's mark first: from here on the folder is a run, which only aelab's files belong to
        atomic_write_text(run.config_file, dump_yaml(cfg))
        run.save_data(bundle.record())
        trainer.trackers = trackers.start(run, cfg, trainer, progress)  # says what the training is about to do
        with trainer.trackers.ending():  # FINISHED with the results, or KILLED / FAILED
            return _finish(run, trainer, evaluate)


def resume_job(path: str | Path, overrides: dict[str, Any] | None = None, progress: bool = True,
               evaluate: bool = True, study: str | None = None) -> tuple[Run, dict[str, Any] | None]:
    """Continue an interrupted run exactly where it stopped; a run stopped before its first checkpoint is
    trained from the start (the seed makes that the same run). A run whose training ended but whose evaluation
    or report is missing (killed or interrupted there) gets them; a run with nothing missing is refused."""
    run = Run.open(path)
    cfg = run.config()
    for key, value in (overrides or {}).items():
        if key not in ("threads", "device", "track", "tracking_uri"):
            raise RunError(f"--{key.replace('_', '-')} cannot change when resuming; resume with the run's own "
                           f"config, or start a new run")
        setattr(cfg, key, value)
    trackers = open_trackers(cfg, study, model=True)
    with run.writing():
        stopped = run.stopped()
        if stopped:
            missing = run.unfinished(cfg.report) if evaluate else []
            if not missing:
                rest = "" if evaluate else f" (its metrics: 'aelab evaluate {run.path}')"
                raise RunError(f"run {run.path} already finished ({stopped}); start a new run to train more{rest}")
            warnings.warn(f"{run.path} finished training ({stopped}) but has no {' or '.join(missing)}; making them "
                          f"now", stacklevel=2)
        fresh = not run.last.is_file()
        if fresh:
            warnings.warn(f"{run.path} stopped before its first checkpoint; training it from the start",
                          stacklevel=2)
        trainer = make_trainer(cfg, run, resume=not fresh, progress=progress)
        trainer.trackers = trackers.start(run, cfg, trainer, progress)  # the same tracked runs, continued
        with trainer.trackers.ending():
            return _finish(run, trainer, evaluate)


def _finish(run: Run, trainer: Trainer, evaluate: bool) -> tuple[Run, dict[str, Any] | None]:
    if not trainer.state.stopped:  # a resumed run whose training had ended goes straight to what is missing
        trainer.fit()
    if not evaluate:
        return run, None
    try:
        # The report reuses the data in memory and the evaluation's test passes: nothing is loaded or encoded twice.
        metrics, passes = evaluate_run_passes(run, bundle=trainer.bundle)
        if trainer.cfg.report:
            write_report(run, bundle=trainer.bundle, passes=passes)
    except KeyboardInterrupt:  # Ctrl-C here: the trained run is kept whole (every file is written atomically)
        raise Interrupted(f"interrupted during the evaluation; the training is finished and kept: make the metrics "
                          f"and the report with 'aelab train --resume {run.path}'") from None
    return run, metrics


# Keys that may differ between a finished run and the same run asked for again (machine, not experiment).
MACHINE_KEYS = ("threads", "device", "data_dir", "report", "track", "tracking_uri")


def config_difference(a: RunConfig, b: RunConfig) -> str | None:
    """The first option (other than machine settings) in which ``a`` and ``b`` differ, or None."""
    da, db = a.comparable(), b.comparable()  # the model's own activation written out: old runs compare equal
    for key in da:
        if key not in MACHINE_KEYS and da[key] != db[key]:
            return f"{key} {da[key]!r} there, {db[key]!r} asked for"
    return None


def ensure_run(cfg: RunConfig, path: str | Path, progress: bool = True, study: str | None = None
               ) -> tuple[Run, dict[str, Any], str]:
    """(run, metrics, what was done: trained / resumed / evaluated / skipped) for ``cfg`` in ``path``; ``study``:
    the study whose tracked run a training's is nested in (``train_job``)."""
    path = Path(path)
    cfg = dataclasses.replace(cfg, name=path.name)
    if not Run(path).is_run():
        run, metrics = train_job(cfg, path, progress=progress, study=study)
        assert metrics is not None
        return run, metrics, "trained"
    run = Run.open(path)
    with run.writing():
        diff = config_difference(run.config(), cfg)
        if diff:
            raise RunError(f"{path} holds a run of another configuration ({diff}); delete that folder or write "
                           f"the experiment somewhere else")
        if run.metrics.is_file():
            return run, run.load_metrics(), "skipped"
        if run.stopped():
            metrics = evaluate_run(run)
            if cfg.report:
                write_report(run)
            return run, metrics, "evaluated"
        run, metrics = resume_job(path, {"threads": cfg.threads} if cfg.threads else None, progress=progress,
                                  study=study)
        assert metrics is not None
        return run, metrics, "resumed"
