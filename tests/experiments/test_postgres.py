"""Tuning studies shared through a real PostgreSQL server (Debian's package, started by tests/postgres.py on
127.0.0.1 in a temporary folder): concurrent workers, a worker killed mid-trial, and one-line storage errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aelab.config import resolve
from aelab.experiments.tune import TuneSettings, load_space
from aelab.experiments.tune.storage import open_storage, open_study
from tests.conftest import aelab_exe
from tests.postgres import PASSWORD, PostgresServer, server_or_skip

TRIAL = ["--model", "dense", "--width", "0.25", "--latent", "8", "--train-limit", "800", "--threads", "1",
         "--no-report", "--patience", "0"]


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    s = server_or_skip()
    yield s
    s.close()


def _open(url: str, barrier: multiprocessing.synchronize.Barrier, out: str, results: multiprocessing.Queue) -> None:
    base = resolve(overrides=dict(model="dense", train_limit=800))
    settings = TuneSettings(base=base, space=load_space(None, base), out=Path(out), study="race", storage=url)
    barrier.wait()
    try:
        _, created = open_study(settings, open_storage(settings))
        results.put(("ok", created))
    except Exception as err:  # reported to the test, which fails naming it
        results.put(("error", repr(err)))


def test_workers_starting_together_on_a_new_database_all_open_one_study(server: PostgresServer,
                                                                         tmp_path: Path) -> None:
    url = server.create_database("race")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, str(tmp_path), results)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(kind == "ok" for kind, _ in got), got  # the race to create Optuna's tables is retried
    assert sorted(created for _, created in got) == [False, False, False, True]  # one study, made once


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)


def test_three_workers_one_killed_mid_trial_end_with_exactly_the_trials_asked_for(server: PostgresServer,
                                                                                    tmp_path: Path) -> None:
    url, out = server.create_database("kill"), tmp_path / "study"
    cmd = [aelab_exe(), "tune", "--storage", url, "--study", "s", "--out", str(out), "--trials", "4",
           "--pruner", "none", "--heartbeat", "1", "-q", "--epochs", "4", *TRIAL]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    pids = {w.pid: w for w in workers}
    victim, killed_trial = None, None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline:  # kill a worker while it trains a trial
        time.sleep(0.2)
        try:
            running = [t for t in _trials(url) if t.state == TrialState.RUNNING and "run" in t.user_attrs]
        except (KeyError, optuna.exceptions.StorageInternalError):  # the study is not made yet
            continue
        for t in running:
            pid = int(t.user_attrs["worker"].rsplit(":", 1)[1])
            if pid in pids and (Path(t.user_attrs["run"]) / "config.yaml").is_file():
                victim, killed_trial = pids[pid], t.number
                os.kill(pid, signal.SIGKILL)
                break
    assert victim is not None, "no worker was seen training a trial"
    outputs = {}
    for w in workers:
        stdout, stderr = w.communicate(timeout=300)
        outputs[w.pid] = (w.returncode, stdout, stderr)
    survivors = [outputs[w.pid] for w in workers if w is not victim]
    assert all(code == 0 for code, _, _ in survivors), survivors

    trials = _trials(url)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4 and not any(t.state == TrialState.PRUNED for t in trials)
    killed = next(t for t in trials if t.number == killed_trial)
    assert killed.state == TrialState.FAIL  # its heartbeat stopped
    retry = [t for t in finished if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retry) == 1 and retry[0].params == killed.params  # queued again and run once: not lost
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 4  # distinct trials, none counted twice
    firsts = [t for t in trials if t.user_attrs.get("note") == "the base configuration"
              and "failed_trial" not in t.system_attrs]
    assert len(firsts) == 1  # the base configuration queued once, by the worker that made the study
    runs = [Path(t.user_attrs["run"]) for t in finished] + [Path(killed.user_attrs["run"])]
    assert len(set(runs)) == 5 and all((r / "config.yaml").is_file() for r in runs)  # each trial its own folder
    # The best trial's retrained run: written once, by one survivor; the other found it done.
    best = max(finished, key=lambda t: t.value)
    assert [p.name for p in out.glob("best-trial-*")] == [f"best-trial-{best.number:04d}"]
    said = sorted("(here)" in stdout for _, stdout, _ in survivors)
    assert said == [False, True], [s for _, s, _ in survivors]
    assert all("(already done)" in stdout for _, stdout, _ in survivors if "(here)" not in stdout)


def _tune_error(url: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([aelab_exe(), "tune", "--storage", url, "--out", str(out), "--trials", "1", *TRIAL],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["wrong password", "stopped server", "bad URL", "no such database"])
def test_storage_errors_are_one_line_hiding_the_password(server: PostgresServer, tmp_path: Path, case: str) -> None:
    out = tmp_path / "study"
    if case == "wrong password":
        url, words = server.url("postgres", password="not-the-" + PASSWORD), "password authentication failed"
    elif case == "stopped server":
        stopped = PostgresServer().start()
        url = stopped.url()
        stopped.close()  # stopped: nothing listens on its port any more
        words = "Connection refused"
    elif case == "bad URL":
        url, words = f"postgresql+psycopg://aelab:{PASSWORD}@127.0.0.1:port/db", "not a database URL"
    else:
        url, words = server.url("nosuchdb"), 'database "nosuchdb" does not exist'
    result = _tune_error(url, out)
    assert result.returncode == 2, result
    message = result.stderr.strip()
    assert message.startswith("error: cannot open the study storage") and "\n" not in message, message
    assert words in message and PASSWORD not in message and "Traceback" not in result.stderr + result.stdout
    assert "aelab:***@" in message
    assert not out.exists()
