"""The command line through the installed console script: help, a real run, Ctrl-C and resume, bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch

from aelab.checkpoints import load_checkpoint
from aelab.config import RunConfig
from tests.conftest import aelab_exe

QUICK = ["--train-limit", "1500", "--threads", "1", "--no-report", "-q"]


def aelab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([aelab_exe(), *args], capture_output=True, text=True, timeout=timeout)


def test_help_explains_every_option():
    out = aelab("train", "--help").stdout
    for f in RunConfig.__dataclass_fields__:
        assert f"--{f.replace('_', '-')}" in out, f
    for preset in ("seed-2d", "seed-64", "seed-128", "seed-256", "mnist-dense-2d"):
        assert preset in out
    assert "metrics.json" in aelab("evaluate", "--help").stdout
    assert aelab("--help").returncode == 0


def test_train_then_evaluate_prints_ae_beside_pca(tmp_path):
    out = tmp_path / "run"
    res = aelab("train", "--preset", "mnist-dense-2d", "--epochs", "1", "--out", str(out), *QUICK)
    assert res.returncode == 0, res.stderr
    assert f"run: {out}" in res.stdout and "(PCA " in res.stdout
    for name in ("config.yaml", "best.safetensors", "last.safetensors", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["dataset"] == "mnist" and m["run"]["latent"] == 2
    assert set(m["autoencoder"]["per_class"]) == {str(d) for d in range(10)}
    assert 0 < m["autoencoder"]["overall"]["ssim"] < 1 and 0 < m["pca"]["overall"]["ssim"] < 1
    assert 0 < m["autoencoder"]["overall"]["knn5"] <= 1
    again = aelab("evaluate", str(out))
    assert again.returncode == 0 and f"{m['pca']['overall']['ssim']:.4f}" in again.stdout


def test_ctrl_c_mid_epoch_then_resume_matches_straight_run(tmp_path):
    args = ["--epochs", "2", "--latent", "8", "--train-limit", "6000", "--threads", "1", "--no-report", "--no-eval"]
    straight = tmp_path / "straight"
    assert aelab("train", "--out", str(straight), *args).returncode == 0
    parted = tmp_path / "parted"
    proc = subprocess.Popen([aelab_exe(), "train", "--out", str(parted), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (parted / "history.csv").exists() and time.time() < deadline:  # wait for the end of epoch 1
        time.sleep(0.05)
    time.sleep(0.7)  # now in the middle of epoch 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived (machine too fast for this slice)")
    assert proc.returncode == 130 and "resume with" in err and "Traceback" not in err
    loop = load_checkpoint(parted / "last.safetensors")[1]["loop"]
    assert loop["epoch"] == 1 and loop["batch"] > 0  # stopped mid-epoch
    res = aelab("train", "--resume", str(parted), "-q", "--no-eval")
    assert res.returncode == 0, res.stderr
    a, _ = load_checkpoint(straight / "last.safetensors")
    b, _ = load_checkpoint(parted / "last.safetensors")
    for k in a:
        if k.startswith("model."):
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


@pytest.mark.parametrize("args, match", [
    (["--dataset", "cifar10"], "cifar10"),
    (["--model", "unet"], "unet"),
    (["--latent", "0"], "latent"),
    (["--latent", "-3"], "latent"),
    (["--batch-size", "0"], "batch-size"),
    (["--colour", "red"], "--colour"),
    (["--preset", "nope"], "nope"),
    (["--config", "/nonexistent/c.yaml"], "c.yaml"),
])
def test_bad_training_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, match):
    out = tmp_path / "run"
    res = aelab("train", "--out", str(out), *args)
    assert res.returncode == 2, res.stderr
    assert match in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_bad_run_folders_exit_2(tmp_path, tiny_run, tiny_run_2d):
    res = aelab("evaluate", str(tmp_path / "missing"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    run, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(run.path, other)
    shutil.copy(tiny_run_2d[0].path / "best.safetensors", other / "best.safetensors")  # latent 2 in a 16 run
    res = aelab("evaluate", str(other))
    assert res.returncode == 2 and "another architecture" in res.stderr and "Traceback" not in res.stderr
    (other / "best.safetensors").write_bytes(b"\x00garbage" * 10)
    before = (other / "metrics.json").read_bytes()
    res = aelab("evaluate", str(other))
    assert res.returncode == 2 and "corrupted" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (other / "metrics.json").read_bytes() == before  # nothing written
    res = aelab("train", "--resume", str(other), "--epochs", "5")
    assert res.returncode == 2 and "cannot change when resuming" in res.stderr


def test_nan_loss_exits_cleanly(tmp_path):
    res = aelab("train", "--out", str(tmp_path / "r"), "--model", "dense", "--optimizer", "sgd", "--lr", "1e12",
                "--loss", "mse", "--epochs", "1", *QUICK)
    assert res.returncode == 1 and "lower --lr" in res.stderr and "Traceback" not in res.stderr


def test_a_log_file_gets_one_line_per_epoch_and_no_carriage_returns(tmp_path, data_root):
    """Not a terminal (a log file, CI): no progress bar redrawn with carriage returns, one line per epoch."""
    out = tmp_path / "run"
    r = subprocess.run([aelab_exe(), "train", "--train-limit", "600", "--epochs", "3", "--latent", "4", "--width",
                        "0.25", "--threads", "1", "--no-report", "--no-eval", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stdout + r.stderr
    assert "\r" not in log
    epochs = [line for line in log.splitlines() if line.lstrip().startswith("epoch")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"], log
