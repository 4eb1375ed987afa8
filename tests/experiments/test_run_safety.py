"""A run folder is aelab's alone (issue 29): a user's folder is never taken for a run nor emptied; a run killed or
interrupted in its final evaluation is finished by ``--resume`` (and Ctrl-C there exits 130); a bad ``--out``
and a damaged ``data.json`` give one line, never a traceback.

The runs train a small dense model for one epoch on a real Fashion-MNIST slice kept as an ``.npz`` (600
training, 200 test images), so that evaluation and report take seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aelab
from aelab.cli.app import main
from aelab.config import dump_yaml, resolve
from aelab.data import DataBundle, load_dataset
from aelab.errors import RunError
from aelab.evaluation.evaluate import check_data
from aelab.experiments import jobs
from aelab.experiments.jobs import train_job
from aelab.runs import Run
from tests.conftest import aelab_exe

ARGS = ["--model", "dense", "--width", "0.25", "--latent", "4", "--epochs", "1", "--threads", "1", "-q"]
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def slice_npz(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A real Fashion-MNIST slice as an .npz data set: 600 training and 200 test images with their classes."""
    b = load_dataset("fashion-mnist", train_limit=600, val_fraction=0.0)
    path = tmp_path_factory.mktemp("data") / "slice.npz"
    np.savez(path, x=b.train.images.numpy(), y=b.train.labels.numpy(), x_test=b.test.images.numpy()[:200],
             y_test=b.test.labels.numpy()[:200], classes=np.array(b.classes))
    return path


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def train_args(npz: Path, out: Path, *extra: str) -> list[str | Path]:
    return ["train", *ARGS, "--dataset", f"npz:{npz}", "--out", out, *extra]


def assert_one_line(result: Result, code: int, *words: str) -> str:
    """The command failed with ``code`` and said why in one 'error: ...' line, without a traceback."""
    assert result.exit_code == code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (files with their bytes, folders as None)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, slice_npz: Path) -> Path:
    """A finished, evaluated run (no report) on the slice."""
    out = tmp_path_factory.mktemp("runs") / "done"
    r = cli(*train_args(slice_npz, out, "--no-report"))
    assert r.exit_code == 0, r.output
    return out


# ------------------------------------------------------------------------------------------ case 1: data loss
USER_FILES = {"config.yaml": "latent: 8\n", "metrics.json": '{"mine": 1}\n', "report.html": "<p>my report</p>\n",
              "history.csv": "epoch,loss\n", "data.json": '{"dataset": "mine"}\n', "figures/plot.png": "my figure"}


def test_a_users_folder_holding_a_config_yaml_is_refused_and_left_untouched(tmp_path: Path, slice_npz: Path) -> None:
    """Seen: 'train --out DIR' on a user's folder with a config.yaml took it for an unfinished run, deleted the
    user's config.yaml, metrics.json, report.html, history.csv, data.json and figures/, and exited 0."""
    out = tmp_path / "mine"
    for name, text in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = snapshot(out)
    assert_one_line(cli(*train_args(slice_npz, out)), 2, "not an aelab run", "--out")
    assert snapshot(out) == before
    # Resuming it would have trained into it and replaced its metrics.json, history.csv and report.html.
    assert_one_line(cli("train", "--resume", out, "-q"), 2, "not an aelab run")
    assert_one_line(cli("evaluate", out), 2, "not an aelab run")
    assert snapshot(out) == before


NAMES = st.sampled_from(["config.yaml", "metrics.json", "report.html", "history.csv", "data.json", "best.safetensors",
                         "last.safetensors", "notes.txt", ".aelab-run", "figures"])


@PROPERTY
@given(files=st.dictionaries(NAMES, st.binary(max_size=64), max_size=6))
def test_a_folder_without_aelabs_mark_is_never_taken_for_a_run(tmp_path_factory: pytest.TempPathFactory,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               files: dict[str, bytes]) -> None:
    """Any user folder made of run-like names with foreign contents (a '.aelab-run' that is not aelab's, a
    'last.safetensors' that is not aelab's checkpoint): a new run refuses it before loading data and changes
    nothing in it; only an empty folder is taken."""
    out = tmp_path_factory.mktemp("user")
    for name, data in files.items():
        (out / name).write_bytes(data)
    before = snapshot(out)

    def no_data(*args: object, **kwargs: object) -> None:
        raise LookupError("the data were loaded")

    monkeypatch.setattr(jobs, "load_dataset", no_data)
    assert not Run(out).is_run()
    cfg = resolve(overrides=dict(model="dense", latent=4, epochs=1, threads=1))
    if files:
        with pytest.raises(RunError, match="not an aelab run"):
            train_job(cfg, out, progress=False)
        with pytest.raises(RunError, match="not an aelab run"):
            Run.open(out)
    else:
        with pytest.raises(LookupError):
            train_job(cfg, out, progress=False)
    assert snapshot(out) == before


def test_a_restart_deletes_only_the_files_aelab_wrote(tmp_path: Path, slice_npz: Path) -> None:
    """A run killed before its first epoch ended is started again: its own files go, the user's stay."""
    out = tmp_path / "run"
    out.mkdir()
    run = Run(out)
    run.start()
    run.config_file.write_text(dump_yaml(resolve(overrides=dict(model="dense", latent=4))))
    run.last.write_bytes(b"a checkpoint cut off by the kill")
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "a.png").write_text("mine too")
    r = cli(*train_args(slice_npz, out, "--no-eval"))
    assert r.exit_code == 0, r.output
    assert "never finished an epoch; starting it again" in r.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "a.png").read_text() == "mine too"
    assert run.is_run() and run.epochs_done() == 1 and "latent: 4" in run.config_file.read_text()
    assert set(run.files()) >= {out / name for name in os.listdir(out) if name not in ("notes.txt", "mine",
                                                                                          ".aelab.lock")}


def test_a_run_of_an_earlier_version_without_the_mark_is_still_a_run(tmp_path: Path, trained: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    Run(old).mark.unlink()  # what earlier versions wrote: config.yaml beside aelab's checkpoints
    assert Run.open(old).is_run()
    assert_one_line(cli("train", "--resume", old, "-q"), 2, "already finished")
    r = cli("evaluate", old)
    assert r.exit_code == 0 and "test SSIM" in r.stdout, r.output
    Run(old).best.unlink()
    Run(old).last.write_bytes(b"not aelab's")  # config.yaml beside a file that is no aelab checkpoint: not a run
    assert not Run(old).is_run()


# ------------------------------------------------------------------------------------------ case 8
def test_ctrl_c_in_the_final_evaluation_exits_130_and_resume_finishes_it(tmp_path: Path, slice_npz: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen: Ctrl-C during the evaluation at the end of training exited 1 with 'Aborted!', and the run was then
    refused by --resume ('already finished') without metrics or report."""
    out = tmp_path / "run"

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "evaluate_run_passes", ctrl_c)
    r = cli(*train_args(slice_npz, out, "--no-report"))
    assert r.exit_code == 130, (r.output, r.exception)
    assert "interrupted during the evaluation" in r.stderr and f"--resume {out}" in r.stderr
    assert "Aborted" not in r.output and not Run(out).metrics.exists()
    monkeypatch.undo()
    r = cli("train", "--resume", out, "-q")
    assert r.exit_code == 0, r.output
    assert "has no metrics.json" in r.stderr and "test SSIM" in r.stdout
    assert Run(out).load_metrics()["run"]["epochs"] == 1
    assert_one_line(cli("train", "--resume", out, "-q"), 2, "already finished")  # nothing is missing any more


def test_a_run_killed_in_its_evaluation_or_report_is_finished_by_resume(tmp_path: Path, slice_npz: Path) -> None:
    """A kill during the final evaluation leaves a run whose training ended, without metrics.json and
    report.html: exactly what --no-eval leaves. --resume evaluates it and writes the report."""
    out = tmp_path / "run"
    assert cli(*train_args(slice_npz, out, "--no-eval")).exit_code == 0
    trained_weights = Run(out).last.read_bytes()
    r = cli("train", "--resume", out, "-q")
    assert r.exit_code == 0, r.output
    run = Run(out)
    assert run.metrics.is_file() and run.report.is_file() and (run.figures / "training.png").is_file()
    assert run.last.read_bytes() == trained_weights  # not trained any further
    run.report.unlink()  # killed while the report was being written: the metrics are there, the page is not
    r = cli("train", "--resume", out, "-q")
    assert r.exit_code == 0 and "has no report.html" in r.stderr and run.report.is_file(), r.output


def test_ctrl_c_anywhere_else_exits_130_in_one_line(tmp_path: Path, slice_npz: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "load_dataset", ctrl_c)  # Ctrl-C while the data are loaded
    r = cli(*train_args(slice_npz, tmp_path / "run"))
    assert r.exit_code == 130 and r.stderr == "interrupted\n" and not (tmp_path / "run").exists(), r.output


# ------------------------------------------------------------------------------------------ case 9: --out
def _dangling(tmp: Path) -> Path:
    (tmp / "link").symlink_to(tmp / "nowhere")
    return tmp / "link"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("mine")
    return tmp / "file" / "run"


@pytest.mark.parametrize("where, words", [
    (_dangling, ("symbolic link", "does not exist")),
    (lambda tmp: _dangling(tmp) / "run", ("symbolic link", "does not exist")),
    (_under_a_file, ("is a file",)),
])
def test_an_out_that_cannot_be_a_folder_gives_one_line_before_the_data_load(tmp_path: Path, slice_npz: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            where, words) -> None:
    """Seen: --out at a dangling symbolic link loaded the data, then failed with a traceback."""
    out = where(tmp_path)
    before = snapshot(tmp_path)

    def no_data(*args: object, **kwargs: object) -> None:
        raise LookupError("the data were loaded")

    monkeypatch.setattr(jobs, "load_dataset", no_data)
    assert_one_line(cli(*train_args(slice_npz, out)), 2, *words)
    assert snapshot(tmp_path) == before


def _without_root_powers() -> list[str]:
    """A command prefix under which this process's permissions apply: none for a user, and for root the same
    uid without the capabilities that override file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux's setpriv: root ignores a folder's permissions, so a "
                    "read-only folder cannot be tested")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("dataset", ["slice", "missing"])
def test_an_out_in_a_read_only_folder_gives_one_line_before_the_data_load(tmp_path: Path, slice_npz: Path,
                                                                          dataset: str) -> None:
    """Seen: --out in a read-only folder loaded the data, then failed with a traceback. With a data set that does
    not exist, the folder's error coming first shows the check runs before the data are read."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    npz = slice_npz if dataset == "slice" else tmp_path / "missing.npz"
    try:
        for out in (ro / "run", ro):  # a new folder in it, and the read-only folder itself
            r = subprocess.run([*_without_root_powers(), aelab_exe(), "train", *ARGS, "--dataset", f"npz:{npz}",
                                "--out", str(out)], capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, r.stderr[-2000:]
            assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr[-2000:]
            assert "not writable" in r.stderr and str(ro) in r.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------------ case 9: data.json
@pytest.fixture
def run_copy(tmp_path: Path, trained: Path) -> Run:
    shutil.copytree(trained, tmp_path / "run")
    return Run(tmp_path / "run")


DAMAGED = ['{"fingerprint": {"content": 5}}', '{"fingerprint": "abc"}', '{"classes": [1, 2]}', '[1, 2]',
           '{"shape": [1, 28]}', "[" * 100_000 + "]" * 100_000, '{"images": {"train": -1}}', "\x00\xff not json"]


@pytest.mark.parametrize("text", DAMAGED, ids=range(len(DAMAGED)))
def test_a_damaged_data_json_costs_a_warning_not_a_traceback(run_copy: Run, tmp_path: Path, text: str) -> None:
    """Seen: a data.json of the wrong shape (or nested too deep) made evaluate and every reader of the run crash
    with a traceback."""
    run_copy.data_record.write_text(text, errors="surrogateescape")
    r = cli("evaluate", run_copy.path)
    assert r.exit_code == 0 and "test SSIM" in r.stdout, (r.output, r.exception)
    assert "data.json is damaged" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = cli("encode", run_copy.path, "data:test", "-o", tmp_path / "codes.npy", "-q")
    assert r.exit_code == 0, (r.output, r.exception)
    with pytest.warns(UserWarning, match="data.json is damaged"):
        model = aelab.load(run_copy.path)
    assert model.run == run_copy


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
RECORDS = st.fixed_dictionaries({}, optional={key: JSON for key in ("dataset", "source", "shape", "classes", "images",
                                                                    "fingerprint", "notes")})


@pytest.fixture(scope="module")
def trained_bundle(trained: Path) -> DataBundle:
    cfg = Run.open(trained).config()
    return load_dataset(cfg.dataset, **cfg.data_kwargs(), progress=False)


@PROPERTY
@given(record=JSON | RECORDS | st.builds(lambda content: {"fingerprint": {"content": content}}, JSON))
def test_every_reader_of_data_json_takes_any_json_value(run_copy: Run, trained_bundle: DataBundle,
                                                        record: object) -> None:
    """Any JSON value as data.json: ``Run.load_data`` gives None or a record of the right shape, and what reads it
    (the data check of evaluation, ``aelab.load``) never fails on it."""
    run_copy.data_record.write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = run_copy.load_data()
        if got is not None:
            assert got == record
            assert all(isinstance(c, str) for c in got.get("classes", []))
            assert isinstance(got.get("fingerprint", {}), dict)
        model = aelab.load(run_copy.path)
        check_data(run_copy, trained_bundle, model.model)
