"""The study's storage and the Optuna objects around it: storage, sampler, pruner, the study itself.

Which storage a study uses:

- ``--storage URL`` (``postgresql+psycopg://user:password@host/db``, the ``postgres`` extra installs the
  driver; any SQLAlchemy URL Optuna takes): Optuna's ``RDBStorage``, shared by workers on any number of
  machines. PostgreSQL takes row locks, so workers never wait for one another's writes.
  An in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``) is refused: each worker process would
  get its own, and nothing would be kept.
- no ``--storage``: ``<out>/study.journal``, Optuna's ``JournalStorage`` on a ``JournalFileBackend``: an
  append-only log guarded by a file lock, safe for any number of worker processes on this machine
  (``--jobs N``, or several ``aelab tune`` started on one folder), where SQLite would answer "database is
  locked". A study made by an older aelab in ``<out>/study.db`` goes on in SQLite.

Every storage keeps heartbeats: a running trial's worker records one every ``--heartbeat`` seconds; a trial
whose last heartbeat is older than four of them is marked failed by the next worker that looks (its process
was killed), and ``RetryHeartbeatStaleTrialCallback`` queues it again with the same options, so that a killed
worker costs its trial's time, not the trial. Optuna's journal storage has no heartbeat of its own: the
subclass below records them as a trial system attribute and implements Optuna's ``BaseHeartbeat``, so that
Optuna's own ``fail_stale_trials`` and retry callback work on it unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import URL, make_url

from aelab.errors import ConfigError, StorageError, one_line
from aelab.experiments.tune.settings import TuneSettings

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_RETRY = 2       # a killed trial is queued again at most this often
HEARTBEAT_KEY = "aelab:heartbeat"
BUDGET_KEY = "budget"  # the study's trial budget (TuneSettings.budget), recorded by the call that made the study
TRIAL_FLAGS = {"epochs": "trial-epochs", "train_limit": "trial-train-limit", "max_minutes": "trial-minutes"}


def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _url(text: str) -> URL | None:
    try:
        return make_url(text)
    except Exception:  # not a URL at all
        return None


def hidden_password(url: str) -> str:
    """``url`` with its password shown as *** (also when it does not parse as a URL)."""
    parsed = _url(url)
    if parsed is not None:
        return parsed.render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", url)


def _reason(err: BaseException) -> str:
    """The database's own words for ``err`` (psycopg's "password authentication failed for user ...", "Connection
    refused"), without SQLAlchemy's wrapping."""
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    line = re.sub(r"^connection failed: (connection to server at [^,]*, port \d+ failed: )?", "", line)
    return re.sub(r"\s+", " ", line.replace("FATAL:", "")).strip()[:160] or type(err).__name__


def _scrub(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (and the whole URL) blotted out, for error messages."""
    parsed = _url(url)
    if parsed is not None and parsed.password:
        text = text.replace(url, hidden_password(url)).replace(str(parsed.password), "***")
    return text


def describe(settings: TuneSettings) -> str:
    """The storage in words, password hidden (for messages and settings.json)."""
    if settings.storage:
        return hidden_password(settings.storage)
    if (settings.out / "study.db").is_file():
        return f"sqlite:///{(settings.out / 'study.db').resolve()}"
    return f"journal file {settings.out / 'study.journal'}"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage on a file, with heartbeats (a trial system attribute holding the time)."""

    def __init__(self, path: Path, interval: int, grace: int,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None):
        super().__init__(JournalFileBackend(str(path)))
        self._interval, self._grace, self._on_stale = interval, grace, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        except UpdateFinishedTrialError:  # another worker already failed it as stale
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_KEY)
            if beat is None:  # killed before its first heartbeat
                beat = t.datetime_start.timestamp() if t.datetime_start else now
            if now - beat > self._grace:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._on_stale


def _driver_url(url: str) -> str:
    """``postgresql://`` means SQLAlchemy's psycopg2 driver; the ``postgres`` extra installs psycopg 3."""
    parsed = _url(url)
    if (parsed is not None and parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None
            and importlib.util.find_spec("psycopg") is not None):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _open_rdb(url: str, settings: TuneSettings, retry: RetryHeartbeatStaleTrialCallback) -> RDBStorage:
    url = _driver_url(url)
    shown = hidden_password(url)
    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite else {
        "pool_pre_ping": True, "connect_args": {"connect_timeout": 10} if "postgresql" in url else {}}
    for attempt in range(6):
        try:
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=settings.heartbeat,
                              grace_period=4 * settings.heartbeat, heartbeat_stale_trial_callback=retry)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            # Workers starting together on a new database race to create Optuna's tables; the losers find
            # them made on the next try.
            if attempt == 5:
                raise StorageError(f"cannot set up the study storage {shown} ({_scrub(_reason(err), url)}); check "
                                   f"the database") from None
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
        except ImportError as err:
            hint = "pip install 'aelab[postgres]'" if "postgres" in url else "install the database driver"
            raise StorageError(f"cannot open the study storage {shown}: its driver is missing ({one_line(err, 80)}); "
                               f"{hint}") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, OSError, optuna.exceptions.StorageInternalError) as err:
            raise StorageError(f"cannot open the study storage {shown} ({_scrub(_reason(err), url)}); check the "
                               f"URL, the password, and that the server is running and reachable") from None
    raise AssertionError("unreachable")


def check_storage(settings: TuneSettings) -> None:
    """Refuse, before any work, a ``--storage`` that is no database URL or that cannot hold a study: an in-memory
    SQLite database lives in one process only (every worker would get its own) and keeps nothing."""
    if not settings.storage:
        return
    url = _url(settings.storage)
    if url is None:
        raise StorageError(f"cannot open the study storage {hidden_password(settings.storage)!r}: not a database "
                           f"URL; give one like postgresql+psycopg://user:password@host:5432/db")
    db = url.database or ""
    if url.drivername.startswith("sqlite") and (db in ("", ":memory:") or db.startswith("file::memory:") or
                                                "mode=memory" in db or url.query.get("mode") == "memory"):
        raise ConfigError(f"--storage {settings.storage}: an in-memory SQLite database keeps nothing and is not "
                          f"shared by the worker processes; give a file (sqlite:///{settings.out.resolve()}/study.db) "
                          f"or leave --storage out for the journal file {settings.out / 'study.journal'}")


def open_storage(settings: TuneSettings) -> BaseStorage:
    """The study's storage (see the module's description), with heartbeats and the retry of killed trials."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if settings.storage:
        check_storage(settings)
        return _open_rdb(settings.storage, settings, retry)
    legacy = settings.out / "study.db"
    if legacy.is_file():
        return _open_rdb(f"sqlite:///{legacy.resolve()}", settings, retry)
    path = settings.out / "study.journal"
    try:
        return HeartbeatJournalStorage(path, settings.heartbeat, 4 * settings.heartbeat, retry)
    except OSError as err:
        raise StorageError(f"cannot open the study journal {path} ({err.strerror or err}); check that the folder "
                           f"is writable") from None


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """``make(seed)``'s sampler, made afresh for each trial with a seed from the study's seed and the trial's
    number. Trial numbers are unique in a study, so workers that start together still draw different trials
    (seeding each worker from the trial count they see would give them all the same seed), and a study worked
    by one process draws the same trials every time it is run."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make((self._seed * 1_000_003 + trial.number) % 2**32)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
                        ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    # constant_liar: a running trial counts as a poor result, so that parallel workers spread out.
    return TrialSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s, constant_liar=True), seed)


def make_pruner(name: str, steps: int, warmup: int = 1) -> optuna.pruners.BasePruner:
    """``steps``: how many steps a trial reports (epochs, or tenths of a budget in minutes); none is pruned at a
    step below ``warmup``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=max(warmup, steps),
                                             reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(settings: TuneSettings, storage: BaseStorage) -> tuple[optuna.Study, bool]:
    """(the study, whether this call created it); a rerun, or another worker, loads the existing one."""
    # Time steps: none is pruned in the first fifth of its budget (epoch steps: the first epoch), where the
    # one-cycle warm-up makes the losses say little.
    warmup = 2 if settings.trial_minutes is not None else 1
    kwargs: dict[str, Any] = dict(study_name=settings.study, storage=storage,
                                  sampler=make_sampler(settings.sampler, settings.sampler_seed),
                                  pruner=make_pruner(settings.pruner, settings.pruning_steps, warmup))
    try:
        try:
            study, created = optuna.create_study(direction=settings.direction, **kwargs), True
        except DuplicatedStudyError:  # made before, or by a worker that started at the same moment
            study, created = optuna.load_study(**kwargs), False
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as err:
        url = settings.storage or ""
        raise StorageError(f"the study storage {describe(settings)} failed ({_scrub(one_line(err, 160), url)}); "
                           f"check the database") from None
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(f"study {settings.study!r} was made to {study.direction.name.lower()} its objective; "
                          f"use --objective {study.user_attrs.get('objective', 'loss')} or another --study name")
    recorded: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        recorded.update(t.distributions)
    settings.space.check_compatible(recorded, settings.study)
    if created or "objective" not in study.user_attrs:
        study.set_user_attr("objective", settings.objective)
        study.set_user_attr("space", settings.space.to_dict())
    check_budget(settings, study)
    return study, created


def check_budget(settings: TuneSettings, study: optuna.Study) -> None:
    """Optuna ranks every trial of a study together, so a study's trials must share one budget (``TuneSettings.
    budget``): the study records it when it is made (or when one made before this check is continued) and a
    call with another budget is refused, naming the first difference."""
    budget = json.loads(json.dumps(settings.budget()))  # as the storage gives it back
    recorded = study.user_attrs.get(BUDGET_KEY)
    if recorded is None:
        study.set_user_attr(BUDGET_KEY, budget)
        return
    for key in [k for k in budget if k in recorded]:  # an option searched by one call only: the space's business
        old, new = recorded[key], budget[key]
        if old != new:
            raise ConfigError(f"study {settings.study!r} trained its trials with {key.replace('_', '-')} {old!r}, this "
                              f"call with {new!r}: Optuna would rank them together; give the same budget (e.g. "
                              f"--{TRIAL_FLAGS.get(key, key.replace('_', '-'))} {old}) or another --study name")


def enqueue_base(settings: TuneSettings, study: optuna.Study) -> dict[str, Any] | None:
    """Queue the base configuration itself as the first trial, so that the search starts from the recipe (and
    its best is never worse than the recipe on the validation split at the trial budget). Called by the
    worker that created the study only, so it is queued once however many workers start together."""
    if not settings.start_from_base:
        return None
    point = settings.space.base_point(settings.base)
    if point:
        study.enqueue_trial(point, user_attrs={"note": "the base configuration"})
    return point or None


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of killed workers failed (and queue their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
