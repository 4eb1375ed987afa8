"""One trial of ``aelab tune``: claim a place in the study, train into a folder of its own, score on validation.

Workers on one study never overlap:

- **A place.** A trial runs only if fewer than ``--trials`` trials with a smaller number are finished, running
  or queued; trial numbers are handed out one by one by the storage, so when workers start trials at the same
  moment, the later numbers give way (they are recorded as failed, "not run"), and the study ends with exactly
  the trials asked for. A trial that gives way because another is running takes its place again if that one's
  worker dies: the worker loop waits for that instead of stopping.
- **A folder.** Each trial makes its own folder, ``trials/trial-NNNN`` (``-1``, ``-2``, ... when a folder of
  that name is left by another study or another machine's worker), and never deletes one it did not make.
"""

from __future__ import annotations

import os
import socket

import optuna
from optuna.trial import TrialState

from aelab.config import RunConfig, dump_yaml
from aelab.data import DataBundle, load_dataset, to_float
from aelab.errors import Interrupted, RunError, one_line
from aelab.evaluation import reconstruct_all
from aelab.evaluation.metrics import ssim_per_image
from aelab.experiments.tune.settings import TIME_STEPS, TuneSettings
from aelab.files import atomic_write_text
from aelab.models import Autoencoder
from aelab.runs import Run
from aelab.tracking import open_trackers
from aelab.training import LoopState, Trainer

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS = "surplus"  # user attribute of a trial that gave way


class SurplusTrial(Exception):
    """This trial has no place in the study: enough trials before it are finished, running or queued."""


def validation_ssim(model: Autoencoder, bundle: DataBundle) -> float:
    """Mean SSIM (11x11 Gaussian, the headline definition) of ``model``'s reconstructions of the val split."""
    target = bundle.val.images
    total = 0.0
    for i in range(0, len(target), 2000):
        chunk = target[i:i + 2000]
        total += float(ssim_per_image(reconstruct_all(model, chunk), to_float(chunk)).sum())
    return total / len(target)


def claim(trial: optuna.Trial, target: int) -> None:
    """Raise ``SurplusTrial`` unless fewer than ``target`` trials numbered before ``trial`` are live."""
    ahead = sum(t.number < trial.number for t in trial.study.get_trials(deepcopy=False, states=LIVE))
    if ahead >= target:
        raise SurplusTrial(f"not run: the study already held {target} trials finished or running when it started "
                           f"(another worker started one at the same moment)")


def own_folder(settings: TuneSettings, number: int) -> Run:
    """A new folder for trial ``number``, made by this call (never one that exists)."""
    base = settings.out / "trials" / f"trial-{number:04d}"
    for i in range(1000):
        path = base.with_name(f"{base.name}-{i}") if i else base
        try:
            path.mkdir(parents=True)
            return Run(path)
        except FileExistsError:
            continue
    raise RunError(f"{base}: a thousand folders of that name exist; clean up {settings.out / 'trials'}")


def pruning_step(st: LoopState, cfg: RunConfig, minutes: float | None) -> tuple[int, bool]:
    """(the step a finished epoch reports to the pruner, whether another epoch follows it).

    Epoch budget: the step is the epoch. Budget in minutes: the tenths of it used so far, so that the pruner
    compares trials after the same share of training time, not after the same epoch (which would favour a slow
    configuration: ahead per epoch, behind per minute)."""
    planned = st.planned_epochs or cfg.epochs
    if minutes is None:
        return st.epoch, st.epoch < planned
    budget = minutes * 60
    step = min(TIME_STEPS, int(TIME_STEPS * st.elapsed / budget))
    return step, st.epoch < planned and st.elapsed + float(st.history[-1]["seconds"]) <= budget


class Objective:
    """Trains one trial's configuration into its own folder and scores it on the validation split."""

    def __init__(self, settings: TuneSettings, bundle: DataBundle | None = None):
        self.s = settings
        self.bundle = bundle
        open_trackers(settings.base)  # --track without its package: one line before any trial, not one per trial

    def _data(self, cfg: RunConfig) -> DataBundle:
        if self.bundle is None:
            self.bundle = load_dataset(cfg.dataset, **cfg.data_kwargs())
        return self.bundle

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        run: Run | None = None
        try:
            claim(trial, self.s.trials)
            params = self.s.space.suggest(trial)
            cfg = self.s.trial_config(params, trial.number)
            run = own_folder(self.s, trial.number)
            return self._train(trial, cfg, run)
        except optuna.TrialPruned:
            raise
        except SurplusTrial as err:
            trial.set_user_attr(SURPLUS, True)
            trial.set_user_attr("error", str(err))
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
        atomic_write_text(run.config_file, dump_yaml(cfg))
        trial.set_user_attr("run", str(run.path))
        sign = -1.0 if self.s.direction == "maximize" else 1.0
        reported: set[int] = set()

        def on_epoch_end(st: LoopState) -> None:
            val = float(st.history[-1]["val_loss"])
            trial.set_user_attr("epochs", st.epoch)
            trial.set_user_attr("val_loss", st.best_val)
            step, more = pruning_step(st, cfg, self.s.trial_minutes)
            if step in reported:  # two epochs in one tenth of a time budget: the first one speaks for it
                return
            reported.add(step)
            trial.report(sign * val, step)
            if more and trial.should_prune():  # after the last epoch the trial is done anyway
                raise optuna.TrialPruned(f"pruned after epoch {st.epoch} (validation loss {val:.5f})")

        trainer = Trainer(cfg, run, bundle=self._data(cfg), progress=False, on_epoch_end=on_epoch_end)
        trainer.trackers = open_trackers(cfg, study=self.s.study).start(run, cfg, trainer, progress=False)
        with trainer.trackers.ending(halts={optuna.TrialPruned: "pruned"}):  # nested in the study's MLflow run
            state = trainer.fit()
            score = validation_ssim(run.load_model("best"), trainer.bundle)
            trainer.trackers.results["tune/val_ssim"] = score
        trial.set_user_attr("val_ssim", score)
        trial.set_user_attr("val_loss", state.best_val)
        trial.set_user_attr("epochs", state.epoch)
        trial.set_user_attr("train_seconds", round(state.elapsed, 1))
        return score if self.s.objective == "ssim" else state.best_val
