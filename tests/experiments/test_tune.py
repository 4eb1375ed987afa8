"""aelab tune: real Optuna studies on small slices of the real data (dense model, 1 epoch per trial)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from aelab.cli import main
from aelab.config import resolve
from aelab.errors import ConfigError, TuneError
from aelab.experiments.tune import TuneSettings, tune
from aelab.experiments.tune.objective import pruning_step
from aelab.experiments.tune.space import Choice, Range, load_space
from aelab.training import LoopState
from tests.conftest import aelab_exe

# Small, fast trials: a narrow dense model, 800 training images (+80 for validation), one epoch, one thread.
TINY = dict(model="dense", width=0.25, latent=8, train_limit=800, epochs=1, threads=1, report=False, patience=0)
SPACE = "activation: [relu, tanh]\nlr: {low: 1.0e-3, high: 1.0e-2, log: true}\nbatch_norm: [true, false]\n"


def settings(tmp: Path, space_text: str = SPACE, **kw) -> TuneSettings:
    base = resolve(overrides=TINY)
    space_file = tmp / "space.yaml"
    space_file.write_text(space_text)
    kw.setdefault("retrain", False)
    kw.setdefault("progress", False)
    return TuneSettings(base=base, space=load_space(space_file, base), out=tmp / "study", study="s", **kw)


def trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read from its journal file with Optuna's own storage class."""
    journal = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return optuna.load_study(study_name="s", storage=journal).get_trials(deepcopy=False)


def test_rerun_continues_the_study_and_its_trial_count(tmp_path: Path) -> None:
    tune(settings(tmp_path, trials=2))
    first = trials(tmp_path / "study")
    assert [t.number for t in first] == [0, 1]
    assert first[0].params == {"activation": "relu", "lr": 3e-3, "batch_norm": False}  # trial 0: the base itself
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in first)
    assert all(0.0 < t.value < 1.0 and t.value == t.user_attrs["val_ssim"] for t in first)

    summary = tune(settings(tmp_path, trials=3))  # the same command with a larger target: one more trial
    again = trials(tmp_path / "study")
    assert [t.number for t in again] == [0, 1, 2]
    assert [t.params for t in again[:2]] == [t.params for t in first]  # the old trials are kept, not redone
    assert summary["trials"]["complete"] == 3
    tune(settings(tmp_path, trials=3))  # target reached: nothing runs
    assert len(trials(tmp_path / "study")) == 3
    changed = SPACE.replace("[relu, tanh]", "[relu, gelu]")  # Optuna cannot change choices within a study
    with pytest.raises(ConfigError, match=r"search space .*: activation: differs from what study 's' recorded"):
        tune(settings(tmp_path, changed, trials=4))
    assert len(trials(tmp_path / "study")) == 3
    table = (tmp_path / "study" / "trials.csv").read_text().splitlines()
    assert len(table) == 4 and table[0].startswith("trial,state,objective,val_ssim")
    for name in ("history", "importances", "parallel"):
        assert (tmp_path / "study" / "figures" / f"{name}.png").stat().st_size > 1000
    # trial folders keep their config and history; checkpoints are dropped unless asked for
    trial0 = tmp_path / "study" / "trials" / "trial-0000"
    assert (trial0 / "config.yaml").is_file() and (trial0 / "history.csv").is_file()
    assert not (trial0 / "last.safetensors").exists()


def test_two_workers_share_one_journal_study_with_distinct_trials(tmp_path: Path) -> None:
    summary = tune(settings(tmp_path, trials=4, jobs=2))
    assert not (tmp_path / "study" / "study.db").exists()  # --jobs N: the journal file, not SQLite
    done = [t for t in trials(tmp_path / "study") if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and summary["trials"]["complete"] + summary["trials"]["pruned"] == 4
    pids = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in done}
    assert len(pids) == 2 and os.getpid() not in pids, pids  # both worker processes contributed
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4  # no two workers drew the same trial
    folders = {t.user_attrs["run"] for t in done}
    assert len(folders) == 4 and all(Path(f).parent == tmp_path / "study" / "trials" for f in folders)


def test_two_tune_commands_started_together_on_one_new_study_work_together(tmp_path: Path) -> None:
    """Two 'aelab tune' on one new study folder (no server: the journal file): distinct trials, exactly the
    number asked for, the base configuration once, no folder of another deleted, the best retrained once."""
    out = tmp_path / "study"
    left = out / "trials" / "trial-0000"  # a folder of that name left by an older study: never deleted
    left.mkdir(parents=True)
    (left / "notes.txt").write_text("mine")
    cmd = [aelab_exe(), "tune", "--out", str(out), "--study", "s", "--trials", "3", "--sampler", "random", "-q",
           "--model", "dense", "--width", "0.25", "--latent", "8", "--train-limit", "800", "--epochs", "1",
           "--threads", "1", "--no-report", "--patience", "0"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [(p.returncode, *o) for p, o in zip(procs, outputs, strict=True)]
    assert [code for code, _, _ in results] == [0, 0], results
    got = trials(out)
    done = [t for t in got if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 3
    assert len({tuple(sorted(t.params.items())) for t in done}) == 3  # the sampler seed is per trial, not per count
    assert sum(t.user_attrs.get("note") == "the base configuration" for t in got) == 1
    assert (left / "notes.txt").read_text() == "mine"
    runs = {t.user_attrs["run"] for t in done}
    assert len(runs) == 3 and str(left) not in runs and all((Path(r) / "history.csv").is_file() for r in runs)
    assert len(list(out.glob("best-trial-*"))) == 1
    assert sorted("(here)" in stdout for _, stdout, _ in results) == [False, True]


def test_a_trial_that_raises_is_recorded_as_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    diverging = "optimizer: [sgd]\nlr: {low: 1.0e+6, high: 1.0e+6, log: true}\n"  # the loss becomes NaN at once
    with pytest.raises(TuneError, match="no trial .* completed"):
        tune(settings(tmp_path, diverging, trials=1))
    (failed,) = trials(tmp_path / "study")
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "TrainingDiverged" in failed.user_attrs["error"]

    summary = tune(settings(tmp_path, trials=2))  # the same study goes on with a sane space
    states = [t.state.name for t in trials(tmp_path / "study")]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]
    assert summary["best"]["trial"] in (1, 2)
    assert "TrainingDiverged" in (tmp_path / "study" / "trials.md").read_text()


def test_a_killed_trial_is_marked_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "study"
    cmd = [aelab_exe(), "tune", "--out", str(out), "--study", "s", "--trials", "1",
           "--no-retrain", "-q", "--heartbeat", "1", "--model", "dense", "--width", "0.25", "--latent", "8",
           "--train-limit", "800", "--epochs", "30", "--threads", "1", "--no-report", "--patience", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "trials" / "trial-0000" / "history.csv"
    deadline = time.monotonic() + 120
    while not history.is_file() and time.monotonic() < deadline:  # wait until the trial is training
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [t.state for t in trials(out)] == [TrialState.RUNNING]
    time.sleep(5)  # the heartbeat grace period (4 s) passes

    runner = CliRunner()
    result = runner.invoke(main, cmd[cmd.index("tune"):])  # the same budget: another one is refused
    assert result.exit_code == 0, result.output
    got = [(t.number, t.state.name) for t in trials(out)]
    assert got == [(0, "FAIL"), (1, "COMPLETE")]
    retry = trials(out)[1]  # the killed trial queued again, with its own options, and run
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials(out)[0].params
    table = (out / "trials.md").read_text()
    assert "killed or crashed" in table and "a new run of trial 0" in table


def test_the_exported_best_config_trains(tmp_path: Path) -> None:
    summary = tune(settings(tmp_path, trials=2))
    best_file = tmp_path / "study" / "best.yaml"
    best = yaml.safe_load(best_file.read_text())
    assert best["activation"] == summary["best"]["params"]["activation"]
    assert best["lr"] == pytest.approx(summary["best"]["params"]["lr"])
    assert best["model"] == "dense" and best["train_limit"] == 800  # the base budget, not a trial's

    result = CliRunner().invoke(main, ["train", "--config", str(best_file), "--out", str(tmp_path / "best-run"),
                                       "--no-eval", "-q"])
    assert result.exit_code == 0, result.output
    trained = yaml.safe_load((tmp_path / "best-run" / "config.yaml").read_text())
    assert {k: trained[k] for k in ("activation", "lr", "batch_norm")} == {
        k: best[k] for k in ("activation", "lr", "batch_norm")}
    assert (tmp_path / "best-run" / "best.safetensors").is_file()


def test_the_default_space_covers_the_published_searches() -> None:
    space = load_space(None, resolve())
    by_name = {p.name: p for p in space.params}
    assert set(by_name["activation"].values) >= {"relu", "leaky_relu", "tanh"}
    assert set(by_name["optimizer"].values) >= {"adam", "sgd", "rmsprop"}
    assert isinstance(by_name["lr"], Range) and by_name["lr"].log
    assert isinstance(by_name["dropout"], Range)
    assert set(by_name["batch_norm"].values) == {True, False}
    assert isinstance(by_name["width"], Choice)
    with_latent = space.with_choice("latent", [16, 64], resolve())
    assert {p.name: p for p in with_latent.params}["latent"].values == (16, 64)


def test_a_toml_space_is_read(tmp_path: Path) -> None:
    f = tmp_path / "space.toml"
    f.write_text('activation = ["relu", "gelu"]\nlatent = {low = 8, high = 64, log = true}\n')
    space = load_space(f, resolve())
    latent = {p.name: p for p in space.params}["latent"]
    assert isinstance(latent, Range) and latent.integer and (latent.low, latent.high) == (8, 64)


@pytest.mark.parametrize("text, key, words", [
    ("activation: [relu]\nfoo: [1, 2]\n", "foo", "unknown parameter"),
    ("activation: []\n", "activation", "empty choice list"),
    ("lr: {low: 0.1, high: 0.001}\n", "lr", "low 0.1 > high 0.001"),
    ("activation: [relu, swish]\n", "activation", "swish"),
    ("dropout: {low: 0.0, high: 1.5}\n", "dropout", "dropout"),
    ("dataset: [mnist]\n", "dataset", "cannot be searched"),
    ("width: {low: 0.5, hihg: 1.0}\n", "width", "hihg"),
    ("batch_norm: {low: 0, high: 1}\n", "batch_norm", "list of choices"),
    ("lr: {low: 0.0, high: 0.1, log: true}\n", "lr", "log range needs low > 0"),
])
def test_a_malformed_space_file_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str, words: str
                                                           ) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(text)
    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["tune", "--space", str(space), "--out", str(out), "--trials", "1"])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("error: search space") and "\n" not in message
    assert f": {key}:" in message and words in message
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("url", ["postgresql://user:secret@127.0.0.1:1/optuna", "sqlite:////no/such/dir/s.db",
                                 "not a url"])
def test_an_unreachable_storage_is_a_clear_error(tmp_path: Path, url: str) -> None:
    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["tune", "--storage", url, "--out", str(out), "--trials", "1",
                                       "--model", "dense", "--train-limit", "800"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: cannot open the study storage")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "secret" not in result.output
    assert not out.exists()


def test_trials_with_a_budget_in_minutes_stop_on_time_and_report_tenths_of_it(tmp_path: Path) -> None:
    minutes = 0.01  # 0.6 s of training: a few of the tiny model's epochs, far fewer than the 500 allowed
    summary = tune(settings(tmp_path, trials=2, trial_epochs=500, trial_minutes=minutes, pruner="none"))
    assert summary["trials"]["complete"] == 2
    for t in trials(tmp_path / "study"):
        cfg = yaml.safe_load((Path(t.user_attrs["run"]) / "config.yaml").read_text())
        assert cfg["max_minutes"] == minutes and cfg["epochs"] == 500
        epochs, seconds = t.user_attrs["epochs"], t.user_attrs["train_seconds"]
        assert 1 <= epochs < 500 and seconds <= minutes * 60 + 1.0  # stopped by the clock, not the epochs
        steps = sorted(t.intermediate_values)
        assert steps and all(0 <= s <= 10 for s in steps) and len(steps) <= epochs  # tenths, each once
    best = yaml.safe_load((tmp_path / "study" / "best.yaml").read_text())
    assert best["max_minutes"] is None and best["epochs"] == 1  # the retraining keeps the base's budget
    assert "in at most 0.01 minutes" in (tmp_path / "study" / "best.yaml").read_text()
    assert json.loads((tmp_path / "study" / "settings.json").read_text())["trial_minutes"] == minutes


def test_the_pruning_step_is_the_share_of_the_time_budget_used() -> None:
    cfg = resolve(overrides=dict(TINY, epochs=12))
    st = LoopState(epoch=3, elapsed=70.0, history=[{"seconds": 23.0}])
    assert pruning_step(st, cfg, None) == (3, True)  # no time budget: the epoch
    assert pruning_step(st, cfg, 2.0) == (5, True)  # 70 s of 120: five tenths, and 23 s more still fit
    st.elapsed = 100.0
    assert pruning_step(st, cfg, 2.0) == (8, False)  # the next epoch would overrun: this is the last
    st.elapsed, st.epoch, st.planned_epochs = 20.0, 4, 4
    assert pruning_step(st, cfg, 2.0) == (1, False)  # the fitted schedule ends here
    st.elapsed = 200.0
    assert pruning_step(st, cfg, 2.0)[0] == 10  # never past the last tenth


def test_a_time_budget_of_zero_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["tune", "--trial-minutes", "0", "--out", str(tmp_path / "t"), "-q"])
    assert result.exit_code == 2 and "invalid trial-minutes 0.0; use --trial-minutes in (0, 1000000]" in result.output
    assert not (tmp_path / "t").exists()


def test_the_study_space_is_packaged_focused_and_every_trial_of_it_is_valid() -> None:
    base = resolve("default")
    space = load_space(None, base, "study")
    by_name = {p.name: p for p in space.params}
    assert by_name["optimizer"] == Choice("optimizer", ("adamw",))  # no SGD / RMSprop trials
    assert set(by_name) >= {"weight_decay", "batch_size", "lr", "dropout", "width", "activation"}
    assert "sgd" in {v for p in load_space(None, base).params if isinstance(p, Choice) for v in p.values}
    settings = TuneSettings(base=base, space=space, out=Path("unused"), study="s").validate()
    for width in by_name["width"].values:  # every categorical corner makes a valid trial configuration
        for batch in by_name["batch_size"].values:
            cfg = settings.trial_config({"width": width, "batch_size": batch, "weight_decay": 1e-3, "lr": 1e-2})
            assert (cfg.width, cfg.batch_size) == (width, batch)
    with pytest.raises(ConfigError, match="unknown packaged search space 'nope'"):
        load_space(None, base, "nope")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"])
def test_an_in_memory_sqlite_storage_is_refused_before_any_trial(tmp_path: Path, url: str) -> None:
    """Issue 29, case 9: each worker thread got its own empty database (tracebacks, exit 0, nothing kept)."""
    with pytest.raises(ConfigError, match=r"in-memory SQLite .*sqlite:///.*study\.db.* journal file") as err:
        tune(settings(tmp_path, trials=1, storage=url))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "study").exists()
    result = CliRunner().invoke(main, ["tune", "--storage", url, "--out", str(tmp_path / "cli"), "--trials", "1"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "in-memory" in result.output, result.output
    assert not (tmp_path / "cli").exists()


def test_a_study_continued_with_another_trial_budget_is_refused(tmp_path: Path) -> None:
    """Issue 29, case 7: trials of 1 epoch and trials of 3 were ranked together in one study."""
    tune(settings(tmp_path, trials=1))
    for changed, words in (({"trial_epochs": 3}, "epochs 1, this call with 3"),
                           ({"trial_train_limit": 400}, "train-limit 800, this call with 400"),
                           ({"trial_minutes": 5.0}, "max-minutes None, this call with 5.0")):
        with pytest.raises(ConfigError, match=f"study 's' trained its trials with {words}") as err:
            tune(settings(tmp_path, trials=2, **changed))
        assert "\n" not in str(err.value) and "another --study name" in str(err.value)
    assert len(trials(tmp_path / "study")) == 1  # nothing ran
    assert tune(settings(tmp_path, trials=2, jobs=2))["trials"]["complete"] == 2  # the same budget continues


@pytest.mark.parametrize("args, words", [(["--sampler-seed", "-1"], "--sampler-seed -1: use 0 to 4294967295"),
                                         (["--trial-epochs", "0"], "invalid trial-epochs 0; use --trial-epochs "),
                                         (["--timeout", "inf"], "--timeout: use a number of minutes in (0, "),
                                         (["--jobs", "100000"], "--jobs 100000: use 1 to 256")])
def test_the_tuning_numbers_are_refused_in_one_line_before_any_work(tmp_path: Path, args: list[str],
                                                                     words: str) -> None:
    result = CliRunner().invoke(main, ["tune", *args, "--out", str(tmp_path / "t"), "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output
    assert not (tmp_path / "t").exists()
