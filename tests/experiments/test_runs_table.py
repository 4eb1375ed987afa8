"""``aelab runs``: one table of a folder of real runs in every state (finished, trained, running, stopped, failed,
damaged, foreign), its filters, sort and formats, and bad expressions as one line with exit code 2."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aelab.checkpoints import load_checkpoint, save_checkpoint
from aelab.cli import main
from aelab.errors import ConfigError
from aelab.experiments.runs_table import FIELDS, parse_filter, runs_table, select
from aelab.runs import Run

HOLD = ("import sys\nfrom aelab.files import folder_lock\nwith folder_lock(sys.argv[1]):\n"
        "    print('ready', flush=True)\n    sys.stdin.read()\n")


def _copy(src: Path, dst: Path) -> Run:
    shutil.copytree(src, dst)
    return Run(dst)


def _set_loop(run: Run, **loop: object) -> None:
    """Rewrite the run's last checkpoint (a real one, through aelab's own writer) with other loop facts."""
    tensors, meta = load_checkpoint(run.last)
    meta["loop"].update(loop)
    save_checkpoint(run.last, tensors, meta)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_run) -> Path:
    """A folder of copies of one real evaluated run, each put in another state."""
    src = tiny_run[0].path
    root = tmp_path_factory.mktemp("many") / "runs"
    root.mkdir()
    _copy(src, root / "finished")
    _copy(src, root / "group" / "nested")  # found at any depth
    trained = _copy(src, root / "trained")
    trained.metrics.unlink()
    stopped = _copy(src, root / "stopped")
    stopped.metrics.unlink()
    _set_loop(stopped, stopped=None)
    failed = _copy(src, root / "failed")
    failed.metrics.unlink()
    _set_loop(failed, stopped=None, epoch=0)
    running = _copy(src, root / "running")
    running.metrics.unlink()
    _set_loop(running, stopped=None)
    damaged = _copy(src, root / "damaged")
    damaged.metrics.write_bytes(damaged.metrics.read_bytes()[:100])  # truncated mid-write by hand
    broken = _copy(src, root / "broken-config")
    broken.metrics.unlink()
    broken.config_file.write_text("model: [conv\nlatent: 16\n")
    (root / "other-tool").mkdir()
    (root / "other-tool" / "config.yaml").write_text("lr: 0.1\nmodel: resnet50\n")  # someone else's project
    (root / "garbage").mkdir()
    (root / "garbage" / "config.yaml").write_bytes(b"\x00\xff\xfe garbage \x80")
    (root / ".hidden").mkdir()
    shutil.copy(src / "config.yaml", root / ".hidden" / "config.yaml")  # a staged write: never listed
    return root


@pytest.fixture(scope="module")
def rows(folder: Path) -> dict[str, dict]:
    """The rows, read while a child process holds the lock of runs/running."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / "running")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        table = runs_table(folder)
    finally:
        proc.communicate("", timeout=30)
    return {r["name"]: r for r in table}


def test_every_state_is_read_from_the_records(rows: dict[str, dict], tiny_run) -> None:
    state = {name: r["state"] for name, r in rows.items()}
    assert state == {"finished": "finished", "group/nested": "finished", "trained": "trained", "stopped": "stopped",
                     "failed": "failed", "running": "running", "damaged": "damaged", "broken-config": "damaged",
                     "other-tool": "foreign", "garbage": "foreign"}
    m = tiny_run[1]
    done = rows["finished"]
    assert (done["model"], done["latent"], done["data"]) == ("conv-modified", 16, "fashion-mnist")
    assert done["ssim"] == m["autoencoder"]["overall"]["ssim"] and done["pca_ssim"] == m["pca"]["overall"]["ssim"]
    assert done["psnr"] == m["autoencoder"]["overall"]["psnr"] and done["pca_mse"] == m["pca"]["overall"]["mse"]
    assert done["epochs"] == 1 and done["precision"] in ("fp32", "bf16")
    assert done["minutes"] == pytest.approx(m["run"]["train_seconds"] / 60, abs=0.01)
    for name in ("trained", "stopped", "running"):  # from the checkpoint's header: no metrics, yet epochs and time
        assert rows[name]["epochs"] == 1 and rows[name]["minutes"] is not None and rows[name]["ssim"] is None
    assert "pid" in rows["running"]["note"]
    assert "aelab train --resume" in rows["stopped"]["note"] and "aelab evaluate" in rows["trained"]["note"]
    assert "aelab evaluate" in rows["damaged"]["note"] and "config.yaml" in rows["broken-config"]["note"]


def test_the_lock_probe_leaves_the_lock_free(folder: Path, rows: dict[str, dict]) -> None:
    # The holder has ended: the run is stopped again, and its lock can be taken (the probe held nothing).
    assert {r["name"]: r["state"] for r in runs_table(folder)}["running"] == "stopped"
    with Run(folder / "running").writing():
        pass


def test_filter_and_sort(rows: dict[str, dict]) -> None:
    table = list(rows.values())
    assert [r["name"] for r in select(table, ["state=finished latent>=16"], "-name")] == ["group/nested", "finished"]
    assert {r["name"] for r in select(table, ["model=conv*", "state!=finished"])} == {
        "trained", "stopped", "failed", "running", "damaged", "broken-config"}
    assert select(table, ["ssim>2"]) == []
    ordered = select(table, [], "-ssim,name")
    assert [r["name"] for r in ordered[:2]] == ["finished", "group/nested"]  # equal SSIM: by name
    assert all(r["ssim"] is None for r in ordered[2:])  # no value: last, whatever the direction
    with pytest.raises(ConfigError, match="keys: name, model"):
        select(table, ["colour=red"])
    with pytest.raises(ConfigError, match="number"):
        select(table, ["latent>=big"])


def test_formats_through_the_command(folder: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["runs", str(folder), "--format", "json", "--filter", "state=finished"])
    assert res.exit_code == 0, res.output
    assert {r["name"] for r in json.loads(res.stdout)} == {"finished", "group/nested"}
    res = runner.invoke(main, ["runs", str(folder), "--format", "csv", "--sort=-ssim"])
    got = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(got[0]) == [f.key for f in FIELDS] and len(got) == 10 and got[0]["state"] == "finished"
    res = runner.invoke(main, ["runs", str(folder), "--format", "md", "--filter", "state=foreign"])
    lines = res.stdout.splitlines()
    assert lines[0].startswith("| run | model | latent") and lines[1].startswith("|---|") and len(lines) == 4
    res = runner.invoke(main, ["runs", str(folder)])
    assert res.exit_code == 0 and "10 runs: 2 finished, 1 trained" in res.stderr
    assert "finished" in res.stdout and "foreign" in res.stdout and "Traceback" not in res.output


@pytest.mark.parametrize("args, says", [(["--filter", "latent=>16"], "latent is a number, '>16' is not"),
                                        (["--filter", "size>3"], "unknown key 'size'; keys: name, model, latent"),
                                        (["--filter", "model>vae"], "compare it with = or !="),
                                        (["--filter", "ssim"], "is not KEY=VALUE"),
                                        (["--sort", "speed"], "unknown key 'speed'; give KEY or -KEY")])
def test_a_bad_expression_is_one_line_exit_2(folder: Path, args: list[str], says: str) -> None:
    res = CliRunner().invoke(main, ["runs", str(folder), *args])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert says in res.stderr


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["runs", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "not a folder" in res.stderr


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_filter_text_parses_or_says_why(text: str) -> None:
    try:
        conditions = parse_filter(text)
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    row = {f.key: None for f in FIELDS}
    for c in conditions:  # a parsed condition is evaluated on any row without an error
        c.holds(row)


def test_the_command_loads_no_torch(folder: Path) -> None:
    """``aelab runs`` reads names, records and checkpoint headers only: importing torch cost ~2 s of its ~2.1 s
    (``Run`` and ``checkpoints`` imported it at module level; now the functions that handle tensors do)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "aelab", "runs", str(folder), "--format", "json"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert {"aelab.runs", "aelab.checkpoints", "aelab.experiments.runs_table"} <= imported
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "numpy") or m == "safetensors.torch")
    assert not heavy, f"aelab runs imported {heavy[:5]}"
    rows = {r["name"]: r["state"] for r in json.loads(res.stdout)}
    assert rows["stopped"] == "stopped" and rows["failed"] == "failed" and rows["finished"] == "finished"
