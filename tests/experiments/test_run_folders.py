"""A run folder is never mixed or lost: one writer at a time, and a user's own folder is never adopted."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from aelab.checkpoints import load_checkpoint
from tests.conftest import aelab_exe

ARGS = ["--latent", "8", "--width", "0.25", "--train-limit", "600", "--epochs", "2", "--threads", "1", "--no-report",
        "-q", "--no-eval"]


def test_two_trainings_into_one_folder_one_trains_the_other_is_refused(tmp_path: Path, data_root: Path) -> None:
    """Seen: two trainings started together into one --out both trained and overwrote each other."""
    out = tmp_path / "run"
    procs = [subprocess.Popen([aelab_exe(), "train", *ARGS, "--seed", str(seed), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.startswith("error: ") and loser.count("\n") == 1, loser
    assert "another aelab process" in loser or "already holds a run" in loser
    winner_seed = 1 if results[0][0] == 0 else 2
    assert f"seed: {winner_seed}" in (out / "config.yaml").read_text()
    _, meta = load_checkpoint(out / "last.safetensors")
    assert meta["loop"]["epoch"] == 2 and meta["loop"]["stopped"] == "completed"


def test_a_running_training_locks_its_folder_against_evaluate_and_resume(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    # long enough to outlive the three refused commands below on any machine (it is killed after them)
    slow = subprocess.Popen([aelab_exe(), "train", *ARGS[:-1], "--epochs", "500", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.safetensors").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        for args in (["evaluate", str(out)], ["train", "--resume", str(out), "-q"], ["report", str(out)]):
            r = subprocess.run([aelab_exe(), *args], capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, (args, r.stderr[-500:])
            assert "being written by another aelab process (pid" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    finally:
        slow.kill()
        slow.wait()
    # The kernel released the killed holder's lock: the next writer gets the folder at once (no stale lock).
    r = subprocess.run([aelab_exe(), "evaluate", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1000:]
    assert (out / "metrics.json").is_file()


def test_a_folder_that_is_not_an_aelab_run_is_refused_and_left_untouched(tmp_path: Path, data_root: Path) -> None:
    """Seen: --out adopted a user's folder and overwrote their history.csv."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "history.csv").write_text("my own notes\n")
    r = subprocess.run([aelab_exe(), "train", *ARGS, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "not an aelab run" in r.stderr and "--out" in r.stderr
    assert (out / "history.csv").read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["history.csv"]
