"""The workers of ``aelab tune``: a worker loop any number of processes and machines run on one study, the
``--jobs N`` processes of one invocation, and the progress bar over the study's trials.

A worker runs trials until the study holds ``--trials`` finished (complete or pruned) ones. When the rest are
running in other workers, it does not leave: it waits, looking every few seconds for a trial whose worker died
(its heartbeat stopped), which Optuna then marks failed and queues again for this worker to run. So a killed
worker costs its trial's time, and every worker ends when the study is complete, with the same best trial.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from aelab.data import DataBundle
from aelab.errors import AelabError, Interrupted
from aelab.experiments.tune.objective import SURPLUS, Objective
from aelab.experiments.tune.settings import TuneSettings
from aelab.experiments.tune.storage import (
    FINISHED,
    count_finished,
    fail_stale_trials,
    open_storage,
    open_study,
    quiet_optuna,
)

Callback = Callable[[optuna.Study, FrozenTrial | None], None]


def run_worker(settings: TuneSettings, max_failures: int, bundle: DataBundle | None = None,
               callback: Callback | None = None, study: optuna.Study | None = None) -> None:
    """Work the study in this process until it holds ``settings.trials`` finished trials, ``max_failures`` of
    this worker's trials failed, or the timeout passed."""
    quiet_optuna()
    if study is None:
        study, _ = open_study(settings, open_storage(settings))
    objective = Objective(settings, bundle)
    deadline = time.monotonic() + settings.timeout_minutes * 60 if settings.timeout_minutes else None
    pause = max(1.0, min(5.0, settings.heartbeat / 2))
    failures = 0
    ran: list[FrozenTrial] = []

    def record(s: optuna.Study, t: FrozenTrial) -> None:
        ran.append(t)
        if callback:
            callback(s, t)

    while deadline is None or time.monotonic() < deadline:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= settings.trials:
            break
        if finished + running >= settings.trials:  # the rest is running elsewhere: stay in case a worker dies
            if callback:
                callback(study, None)
            time.sleep(pause)
            continue
        ran.clear()
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[record], gc_after_trial=True)
        failures += sum(t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS) for t in ran)
        if failures >= max_failures:
            break


def _worker_process(settings: TuneSettings, max_failures: int) -> None:
    """Entry point of a worker process started by ``--jobs N``."""
    try:
        run_worker(settings, max_failures)
    except KeyboardInterrupt:
        sys.exit(130)
    except AelabError as err:
        print(f"error: worker: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


class Progress:
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
        fails = sum(t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS) for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if complete:
            best = (max if self.s.direction == "maximize" else min)(complete, key=lambda t: t.value)
            self.bar.set_postfix(best=f"{best.value:.4f} (#{best.number})", failed=fails)

    def _announce(self, t: FrozenTrial) -> None:
        if t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS):
            return
        if t.state == TrialState.FAIL:
            self.bar.write(f"trial {t.number} failed: {t.user_attrs.get('error', 'killed or crashed')}")
        elif t.state == TrialState.PRUNED and self.s.progress:
            self.bar.write(f"trial {t.number} pruned after epoch {t.user_attrs.get('epochs', '?')}")
        elif t.state == TrialState.COMPLETE and self.s.progress:
            self.bar.write(f"trial {t.number}: {self.s.objective_label} {t.value:.4f}")

    def close(self) -> None:
        self.bar.close()


def run_workers(settings: TuneSettings, study: optuna.Study, remaining: int, bundle: DataBundle) -> None:
    """This invocation's share of the work: one worker here, or ``--jobs`` worker processes."""
    progress = Progress(settings, study)
    # A worker stops after as many failures of its own as its share of the trials (failed trials are replaced
    # up to that many), so that a search space that always fails ends instead of looping.
    share = -(-remaining // settings.jobs)
    try:
        if settings.jobs == 1:
            run_worker(settings, share, bundle, callback=progress.poll, study=study)
        else:
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker_process, args=(settings, share), daemon=False)
                     for _ in range(settings.jobs)]
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
