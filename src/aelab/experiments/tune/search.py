"""Hyperparameter search with Optuna: ``aelab tune``.

A study lives in a folder: ``study.db`` (SQLite, unless ``--storage URL`` names a shared database),
``trials/trial-NNNN/`` (each trial's config and history), the trials table, the best configuration as a
config file for ``aelab train --config``, the best model retrained on the full budget, and Optuna's plots.

- Running the same command again continues the study: ``trials`` is the number of finished (complete or
  pruned) trials the study should hold, so a rerun runs only the missing ones.
- ``jobs`` worker processes share one storage; workers on other machines join through ``--storage URL``.
- A trial that raises (a diverging learning rate, ...) is recorded as failed and the study goes on. A trial
  whose process was killed stops sending heartbeats and is marked failed by the next worker that starts a
  trial once its last heartbeat is older than the grace period (4 heartbeats).
- The objective is computed on the validation split, never on the test set: the mean SSIM (the headline
  definition) of the best checkpoint's reconstructions, or the best validation loss. The pruner is fed the
  validation loss after each epoch (negated when the objective is SSIM, so larger is better for both).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from aelab.config import RunConfig, dump_yaml
from aelab.data import DataBundle, load_dataset, to_float
from aelab.errors import AelabError, ConfigError, Interrupted, one_line
from aelab.evaluation import reconstruct_all
from aelab.evaluation.metrics import ssim_per_image
from aelab.experiments.tune.export import export
from aelab.experiments.tune.settings import TuneSettings
from aelab.experiments.tune.storage import (
    FINISHED,
    count_finished,
    enqueue_base,
    fail_stale_trials,
    hidden_password,
    open_storage,
    open_study,
    quiet_optuna,
)
from aelab.files import atomic_write_text, write_json
from aelab.models import Autoencoder
from aelab.runs import Run
from aelab.training import LoopState, Trainer


# ------------------------------------------------------------------------------------------ one trial
def validation_ssim(model: Autoencoder, bundle: DataBundle) -> float:
    """Mean SSIM (11x11 Gaussian, the headline definition) of ``model``'s reconstructions of the val split."""
    target = bundle.val.images
    total = 0.0
    for i in range(0, len(target), 2000):
        chunk = target[i:i + 2000]
        total += float(ssim_per_image(reconstruct_all(model, chunk), to_float(chunk)).sum())
    return total / len(target)


class Objective:
    """Trains one trial's configuration into ``trials/trial-NNNN`` and scores it on the validation split."""

    def __init__(self, settings: TuneSettings, bundle: DataBundle | None = None):
        self.s = settings
        self.bundle = bundle

    def _data(self, cfg: RunConfig) -> DataBundle:
        if self.bundle is None:
            self.bundle = load_dataset(cfg.dataset, **cfg.data_kwargs())
        return self.bundle

    def __call__(self, trial: optuna.Trial) -> float:
        run: Run | None = None
        try:
            params = self.s.space.suggest(trial)
            cfg = self.s.trial_config(params, trial.number)
            run = Run(self.s.out / "trials" / f"trial-{trial.number:04d}")
            return self._train(trial, cfg, run)
        except optuna.TrialPruned:
            raise
        except Interrupted as err:  # Ctrl-C: the whole search stops, not just this trial
            raise KeyboardInterrupt(str(err)) from None
        except Exception as err:
            trial.set_user_attr("error", one_line(err))
            raise
        finally:
            if run is not None and not self.s.keep_checkpoints:
                for p in (run.best, run.last):
                    p.unlink(missing_ok=True)

    def _train(self, trial: optuna.Trial, cfg: RunConfig, run: Run) -> float:
        if run.path.exists():  # left by a trial of the same number in a study that was deleted
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True)
        atomic_write_text(run.config_file, dump_yaml(cfg))
        trial.set_user_attr("run", str(run.path))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        sign = -1.0 if self.s.direction == "maximize" else 1.0

        def on_epoch_end(st: LoopState) -> None:
            val = float(st.history[-1]["val_loss"])
            trial.set_user_attr("epochs", st.epoch)
            trial.set_user_attr("val_loss", st.best_val)
            trial.report(sign * val, st.epoch)
            if st.epoch < cfg.epochs and trial.should_prune():  # after the last epoch the trial is done anyway
                raise optuna.TrialPruned(f"pruned after epoch {st.epoch} (validation loss {val:.5f})")

        trainer = Trainer(cfg, run, bundle=self._data(cfg), progress=False, on_epoch_end=on_epoch_end)
        state = trainer.fit()
        score = validation_ssim(run.load_model("best"), trainer.bundle)
        trial.set_user_attr("val_ssim", score)
        trial.set_user_attr("val_loss", state.best_val)
        trial.set_user_attr("epochs", state.epoch)
        trial.set_user_attr("train_seconds", round(state.elapsed, 1))
        return score if self.s.objective == "ssim" else state.best_val


# ------------------------------------------------------------------------------------------ workers
class _StopRule:
    """Stops a worker once the study holds enough finished trials, once this worker finished its share, or
    after as many failures here as its share (failed trials are replaced up to that many)."""

    def __init__(self, target: int, share: int):
        self.target, self.share, self.finished, self.failures = target, share, 0, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failures += trial.state == TrialState.FAIL
        self.finished += trial.state in FINISHED
        if self.finished >= self.share or self.failures >= self.share or count_finished(study) >= self.target:
            study.stop()


def run_worker(settings: TuneSettings, share: int, seed_offset: int = 0, bundle: DataBundle | None = None,
               callback: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
    """Work the study in this process: up to ``share`` finished trials, until the study holds
    ``settings.trials`` of them or the timeout passed."""
    quiet_optuna()
    study = open_study(settings, open_storage(settings), seed_offset)
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [_StopRule(settings.trials, share)]
    if callback:
        callbacks.append(callback)
    timeout = settings.timeout_minutes * 60 if settings.timeout_minutes else None
    study.optimize(Objective(settings, bundle), n_trials=2 * share, timeout=timeout, catch=(Exception,),
                   callbacks=callbacks, gc_after_trial=True)


def _worker_process(settings: TuneSettings, share: int, seed_offset: int) -> None:
    """Entry point of a worker process started by ``--jobs N``."""
    try:
        run_worker(settings, share, seed_offset)
    except KeyboardInterrupt:
        sys.exit(130)
    except AelabError as err:
        print(f"error: worker: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


class _Progress:
    """The bar over trials, fed from the study's records (so it counts every worker's trials)."""

    def __init__(self, settings: TuneSettings, study: optuna.Study):
        self.s, self.study = settings, study
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.bar = tqdm(total=settings.trials, initial=min(count_finished(study), settings.trials),
                        desc=f"tune {settings.study}", unit="trial", disable=None if settings.progress else True,
                        dynamic_ncols=True)

    def poll(self, *_: Any) -> None:
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if t.number in self.seen or not t.state.is_finished():
                continue
            self.seen.add(t.number)
            if t.state in FINISHED and self.bar.n < self.bar.total:
                self.bar.update(1)
            self._announce(t)
        fails = sum(t.state == TrialState.FAIL for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if complete:
            best = (max if self.s.direction == "maximize" else min)(complete, key=lambda t: t.value)
            self.bar.set_postfix(best=f"{best.value:.4f} (#{best.number})", failed=fails)

    def _announce(self, t: FrozenTrial) -> None:
        if t.state == TrialState.FAIL:
            self.bar.write(f"trial {t.number} failed: {t.user_attrs.get('error', 'killed or crashed')}")
        elif t.state == TrialState.PRUNED and self.s.progress:
            self.bar.write(f"trial {t.number} pruned after epoch {t.user_attrs.get('epochs', '?')}")
        elif t.state == TrialState.COMPLETE and self.s.progress:
            self.bar.write(f"trial {t.number}: {self.s.objective_label} {t.value:.4f}")

    def close(self) -> None:
        self.bar.close()


def _optimize(settings: TuneSettings, study: optuna.Study, remaining: int, bundle: DataBundle) -> None:
    progress = _Progress(settings, study)
    offset = 7919 * len(study.trials)  # fresh sampler seeds for each invocation and worker
    try:
        if settings.jobs > 1 and study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            # A queued trial (the base configuration) runs here first: on SQLite two processes can pop the
            # same queued trial at once (no row locks), and the second one then crashes telling its result.
            run_worker(settings, 1, offset, bundle, callback=progress.poll)
            remaining = settings.trials - count_finished(study)
        if settings.jobs == 1:
            run_worker(settings, remaining, offset, bundle, callback=progress.poll)
        elif remaining > 0:
            # Each worker takes an equal share, so that every worker contributes and the study does not
            # overshoot the target by more than the rounding.
            share = -(-remaining // settings.jobs)
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker_process, args=(settings, share, offset + 104729 * (i + 1)),
                                 daemon=False) for i in range(settings.jobs)]
            try:
                for p in procs:
                    p.start()
                while any(p.is_alive() for p in procs):
                    time.sleep(1.0)
                    progress.poll()
            finally:
                for p in procs:
                    p.join(timeout=60)
                    if p.is_alive():
                        p.terminate()
                        p.join()
        progress.poll()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the study keeps its finished trials: run the same command again to "
                          f"continue it ({settings.out})") from None
    finally:
        progress.close()


# ------------------------------------------------------------------------------------------ the command
def _prepare_folder(settings: TuneSettings) -> tuple[optuna.storages.RDBStorage, bool]:
    """Open the storage; the folder is made only once the storage works (nothing is left on an error)."""
    created = False
    if settings.storage is None:
        created = not settings.out.exists()
        settings.out.mkdir(parents=True, exist_ok=True)
    try:
        storage = open_storage(settings)
    except AelabError:
        if created:
            shutil.rmtree(settings.out, ignore_errors=True)
        raise
    settings.out.mkdir(parents=True, exist_ok=True)
    return storage, created


def tune(settings: TuneSettings) -> dict[str, Any]:
    """Run (or continue) the study, then export its results; returns the summary (also in summary.json)."""
    quiet_optuna()
    settings.validate()
    trial_cfg = settings.trial_config({})
    bundle = load_dataset(trial_cfg.dataset, **trial_cfg.data_kwargs())
    if len(bundle.val) == 0:
        raise ConfigError("the validation split is empty; use a larger --val-fraction or --trial-train-limit")
    storage, created = _prepare_folder(settings)
    try:
        study = open_study(settings, storage)
    except AelabError:
        if created:
            shutil.rmtree(settings.out, ignore_errors=True)
        raise
    atomic_write_text(settings.out / "space.yaml", "# the search space of this study's latest run\n"
                      + yaml.safe_dump(settings.space.to_dict(), sort_keys=False))
    write_json(settings.out / "settings.json", _settings_record(settings))
    fail_stale_trials(study)
    enqueue_base(settings, study)
    before = len(study.get_trials(deepcopy=False, states=FINISHED + (TrialState.FAIL,)))
    remaining = settings.trials - count_finished(study)
    if remaining > 0:
        _optimize(settings, study, remaining, bundle)
    elif settings.progress:
        print(f"study {settings.study} already holds {count_finished(study)} finished trials "
              f"(--trials {settings.trials}); raise --trials to run more", file=sys.stderr)
    summary = export(settings, study)
    summary["new_trials"] = len(study.get_trials(deepcopy=False, states=FINISHED + (TrialState.FAIL,))) - before
    return summary


def _settings_record(settings: TuneSettings) -> dict[str, Any]:
    return {"study": settings.study, "storage": hidden_password(settings.storage_url), "trials": settings.trials,
            "sampler": settings.sampler, "pruner": settings.pruner, "objective": settings.objective,
            "jobs": settings.jobs, "sampler_seed": settings.sampler_seed, "trial_epochs": settings.trial_epochs,
            "trial_train_limit": settings.trial_train_limit, "space_source": settings.space.source,
            "start_from_base": settings.start_from_base,
            "base": settings.base.to_dict()}
