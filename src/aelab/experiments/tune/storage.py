"""The study's storage and the Optuna objects around it: storage, sampler, pruner, the study itself."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from aelab.errors import ConfigError, StorageError, one_line
from aelab.experiments.tune.settings import TuneSettings

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def hidden_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show it as given
        return url


def open_storage(settings: TuneSettings) -> optuna.storages.RDBStorage:
    """The study's database, with heartbeats so that killed trials are marked failed."""
    import sqlalchemy.exc

    url = settings.storage_url
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {
        "pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=settings.heartbeat,
                                          grace_period=4 * settings.heartbeat)
    except (ImportError, sqlalchemy.exc.SQLAlchemyError, ValueError, OSError,
            optuna.exceptions.StorageInternalError) as err:
        raise StorageError(f"cannot open the study storage {hidden_password(url)} ({one_line(err, 160)}); "
                           f"check the URL, that the server is reachable and its driver installed") from None


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(settings: TuneSettings, storage: optuna.storages.BaseStorage, seed_offset: int = 0
               ) -> optuna.Study:
    """Create the study, or load it when it exists (a rerun continues it)."""
    epochs = settings.trial_config({}).epochs
    try:
        study = optuna.create_study(study_name=settings.study, storage=storage, direction=settings.direction,
                                    load_if_exists=True, sampler=make_sampler(settings.sampler,
                                                                             settings.sampler_seed + seed_offset),
                                    pruner=make_pruner(settings.pruner, epochs))
    except optuna.exceptions.StorageInternalError as err:
        raise StorageError(f"the study storage {hidden_password(settings.storage_url)} failed "
                           f"({one_line(err, 160)}); check the database") from None
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(f"study {settings.study!r} was made to {study.direction.name.lower()} its objective; "
                          f"use --objective {study.user_attrs.get('objective', 'loss')} or another --study name")
    recorded: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        recorded.update(t.distributions)
    settings.space.check_compatible(recorded, settings.study)
    if "objective" not in study.user_attrs:
        study.set_user_attr("objective", settings.objective)
        study.set_user_attr("space", settings.space.to_dict())
    return study


def enqueue_base(settings: TuneSettings, study: optuna.Study) -> dict[str, Any] | None:
    """Make trial 0 of a new study the base configuration itself, so that the search starts from the recipe
    (and its best is never worse than the recipe on the validation split at the trial budget)."""
    if not settings.start_from_base or study.get_trials(deepcopy=False):
        return None
    point = settings.space.base_point(settings.base)
    if point:
        study.enqueue_trial(point, user_attrs={"note": "the base configuration"})
    return point or None


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
