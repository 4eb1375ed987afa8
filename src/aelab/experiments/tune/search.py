"""Hyperparameter search with Optuna: ``aelab tune``.

A study lives in a folder: ``study.journal`` (Optuna's journal file, unless ``--storage URL`` names a shared
database; see ``storage.py``), ``trials/trial-NNNN/`` (each trial's config and history), the trials table, the
best configuration as a config file for ``aelab train --config``, the best model retrained on the full budget,
and Optuna's plots.

- Running the same command again continues the study: ``trials`` is the number of finished (complete or
  pruned) trials the study should hold, so a rerun runs only the missing ones.
- ``jobs`` worker processes share one storage; more ``aelab tune`` processes may join the same study, on this
  machine (same ``--out``) or on others (same ``--storage URL``). However many there are, the study ends
  with exactly ``trials`` finished trials, all distinct (``objective.py``, ``workers.py``).
- A trial that raises (a diverging learning rate, ...) is recorded as failed and the study goes on. A trial
  whose process was killed stops sending heartbeats: it is marked failed once its last heartbeat is older
  than the grace period (4 heartbeats) and queued again with the same options.
- The objective is computed on the validation split, never on the test set: the mean SSIM (the headline
  definition) of the best checkpoint's reconstructions, or the best validation loss. The pruner is fed the
  validation loss after each epoch (negated when the objective is SSIM, so larger is better for both).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from aelab.config import settle_model
from aelab.data import load_dataset
from aelab.errors import AelabError, ConfigError
from aelab.experiments.tune.export import export
from aelab.experiments.tune.settings import TuneSettings
from aelab.experiments.tune.storage import (
    FINISHED,
    check_storage,
    count_finished,
    describe,
    enqueue_base,
    fail_stale_trials,
    open_storage,
    open_study,
    quiet_optuna,
)
from aelab.experiments.tune.workers import run_workers
from aelab.files import atomic_write_text, write_json


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when nothing is in it: a worker that started at the same moment may already use it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _prepare_folder(settings: TuneSettings) -> tuple[optuna.storages.BaseStorage, bool]:
    """Open the storage; (storage, whether this call made the study folder). A folder this call made is
    removed again on an error if it is still empty; a folder with anyone's files in it is never removed."""
    made = False
    if settings.storage is None:  # the journal file lives in the folder
        try:
            settings.out.mkdir(parents=True)
            made = True
        except FileExistsError:
            pass
    try:
        storage = open_storage(settings)
    except AelabError:
        if made:
            _remove_if_empty(settings.out)
        raise
    settings.out.mkdir(parents=True, exist_ok=True)
    return storage, made


def tune(settings: TuneSettings) -> dict[str, Any]:
    """Run (or continue, or join) the study, then export its results; returns the summary (also in
    summary.json)."""
    quiet_optuna()
    settings.validate()
    check_storage(settings)  # before the data is read
    trial_cfg = settings.trial_config({})
    bundle = load_dataset(trial_cfg.dataset, **trial_cfg.data_kwargs())
    if len(bundle.val) == 0:
        raise ConfigError("the validation split is empty; use a larger --val-fraction or --trial-train-limit")
    settings.base = settle_model(settings.base, bundle.shape)[0]  # no --model: the default for these images
    storage, made = _prepare_folder(settings)
    try:
        study, created = open_study(settings, storage)
    except AelabError:
        if made:
            _remove_if_empty(settings.out)
        raise
    atomic_write_text(settings.out / "space.yaml", "# the search space of this study's latest run\n"
                      + yaml.safe_dump(settings.space.to_dict(), sort_keys=False))
    write_json(settings.out / "settings.json", _settings_record(settings))
    fail_stale_trials(study)
    if created:
        enqueue_base(settings, study)
    before = len(study.get_trials(deepcopy=False, states=FINISHED + (TrialState.FAIL,)))
    remaining = settings.trials - count_finished(study)
    if remaining > 0:
        run_workers(settings, study, remaining, bundle)
    elif settings.progress:
        print(f"study {settings.study} already holds {count_finished(study)} finished trials "
              f"(--trials {settings.trials}); raise --trials to run more", file=sys.stderr)
    summary = export(settings, study)
    summary["new_trials"] = len(study.get_trials(deepcopy=False, states=FINISHED + (TrialState.FAIL,))) - before
    return summary


def _settings_record(settings: TuneSettings) -> dict[str, Any]:
    return {"study": settings.study, "storage": describe(settings), "trials": settings.trials,
            "sampler": settings.sampler, "pruner": settings.pruner, "objective": settings.objective,
            "jobs": settings.jobs, "sampler_seed": settings.sampler_seed, "trial_epochs": settings.trial_epochs,
            "trial_train_limit": settings.trial_train_limit, "trial_minutes": settings.trial_minutes,
            "space_source": settings.space.source,
            "start_from_base": settings.start_from_base,
            "base": settings.base.to_dict()}
