"""Training one run on two processes (DistributedDataParallel, gloo on the CPU), with real processes started by
'aelab train --nproc 2' (torchrun's launcher) or by hand as torchrun would on two machines, on a small slice of
the real data.

The model is the dense one without dropout or batch norm, in fp32: then N processes compute one process's run
up to float rounding (the global batch is the same images, and each rank's loss is weighted by its share), so
the tests hold 2-process runs to the 1-process run within RTOL (relative, per epoch's losses) and ATOL (the
final weights). The optimizer is SGD: Adam's division by the gradients' running RMS amplifies last-bit
rounding differences chaotically (measured with Adam at lr 1e-3: 1e-8 after epoch 1, 2e-3 after epoch 6),
while with SGD the two runs stay within 2e-7 over all 6 epochs. The batch (63) is odd, so that every step
splits unevenly (32 + 31 images), and the validation split (199 images) is odd, so that a padded shard
(DistributedSampler's) would count an image twice.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from aelab.training.distributed import sharded_sum
from tests.conftest import aelab_exe
from tests.postgres import free_port

EPOCHS = 6
COMMON = ["--model", "dense", "--latent", "8", "--width", "0.5", "--train-limit", "1990", "--batch-size", "63",
          "--threads", "1", "--no-report", "--patience", "0", "--precision", "fp32", "--schedule", "constant",
          "--optimizer", "sgd", "--lr", "0.05", "--epochs", str(EPOCHS), "-q"]
RTOL = 1e-5   # relative difference of each epoch's train and validation loss (measured: at most 2e-7)
ATOL = 1e-5   # largest weight difference after the run (measured: 3e-8; the weights are ~0.36 at most)
RUN_FILES = {".aelab.lock", ".aelab-run", "best.safetensors", "config.yaml", "data.json", "history.csv",
             "last.safetensors", "facts.json"}


def aelab(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
          ) -> subprocess.CompletedProcess:
    return subprocess.run([aelab_exe(), "train", *COMMON, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def assert_same_run(a: Path, b: Path) -> None:
    ha, hb = history(a), history(b)
    assert [int(r["epoch"]) for r in hb] == list(range(1, EPOCHS + 1))  # one row per epoch: one writer
    for ra, rb in zip(ha, hb, strict=True):
        for key in ("train_loss", "val_loss"):
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=RTOL), (ra, rb)
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa if k.startswith("model."))
    assert worst < ATOL, worst


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """The run on one process."""
    out = tmp_path_factory.mktemp("one") / "run"
    r = aelab("--out", str(out), "--no-eval")
    assert r.returncode == 0, r.stderr
    return out


def test_two_processes_train_the_one_process_run_and_write_one_set_of_files(reference: Path, tmp_path: Path
                                                                            ) -> None:
    out = tmp_path / "two"
    r = aelab("--out", str(out), "--nproc", "2")
    assert r.returncode == 0, r.stderr
    assert_same_run(reference, out)
    evaluated = {"metrics.json", "pca.safetensors", "eval-cache.safetensors"}
    assert set(os.listdir(out)) == RUN_FILES | evaluated  # evaluated once, on rank 0
    assert os.listdir(tmp_path) == ["two"]
    assert r.stdout.count("test SSIM") == 1 and "Traceback" not in r.stderr


def _rank_env(rank: int, port: int) -> dict[str, str]:
    """What torchrun sets for one process per machine on two machines (a static TCP rendezvous)."""
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "RANK": str(rank), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}


def test_a_one_process_checkpoint_resumes_on_two_machines_without_a_shared_folder(reference: Path,
                                                                                   tmp_path: Path) -> None:
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir()
    node1.mkdir()
    # One process, stopped with Ctrl-C in the middle of an epoch: a checkpoint mid-epoch.
    proc = subprocess.Popen([aelab_exe(), "train", *COMMON, "--out", "run", "--no-eval"], cwd=node0,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (node0 / "run" / "history.csv").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(history(node0 / "run")) < EPOCHS
    # Resumed on two "machines": each rank in its own working folder; the path 'run' exists on node0 only.
    port = free_port()
    ranks = [subprocess.Popen([aelab_exe(), "train", "--resume", "run", "-q", "--no-eval"], cwd=node, env=_rank_env(
        rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank, node in enumerate((node0,
                                                                                                              node1))]
    outs = [p.communicate(timeout=300) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outs
    assert list(node1.iterdir()) == []  # rank 1 read nothing from the run folder and wrote nothing anywhere
    assert_same_run(reference, node0 / "run")


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the child of ``parent`` that torchrun started as ``rank``."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(child)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process through /proc")
def test_a_killed_rank_ends_the_job_with_one_line_and_one_process_resumes_it(reference: Path, tmp_path: Path
                                                                              ) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([aelab_exe(), "train", *COMMON, "--out", str(out), "--no-eval", "--nproc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (out / "history.csv").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=120)  # no rank is left waiting for the dead one
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1
    assert len(history(out)) < EPOCHS  # it was killed before the end
    last = err.strip().splitlines()[-1]
    assert last == (f"error: rank 1 of 2 was killed by SIGKILL; the run keeps its last checkpoint: resume it with "
                    f"'aelab train --resume {out} --nproc 2'"), err
    assert "Traceback" not in err
    r = subprocess.run([aelab_exe(), "train", "--resume", str(out), "-q", "--no-eval"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same_run(reference, out)


def _count(rank: int, port: int, n: int, folder: Path) -> None:
    """One rank of the evaluation-count test: which validation images this rank scores."""
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    seen: list[int] = []

    def part(lo: int, hi: int) -> float:
        seen.extend(range(lo, hi))
        return float(sum(range(lo, hi)))

    total, count = sharded_sum(n, part)
    (folder / f"rank{rank}.txt").write_text(f"{total} {count}\n" + " ".join(map(str, seen)))
    dist.destroy_process_group()


def test_validation_counts_every_image_exactly_once(tmp_path: Path) -> None:
    n = 199  # odd: two ranks cannot take equal halves
    port = free_port()
    torch.multiprocessing.spawn(_count, args=(port, n, tmp_path), nprocs=2)
    lines = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    seen = [int(i) for _, ids in lines for i in ids.split()]
    assert sorted(seen) == list(range(n))  # each image once, none twice, none left out
    for head, _ in lines:
        total, count = head.split()
        assert (float(total), int(count)) == (float(sum(range(n))), n)  # every rank gets the same full sums
    # What sharding with PyTorch's DistributedSampler would do: pad the split to 200 by repeating an image.
    padded = [i for r in (0, 1) for i in DistributedSampler(range(n), num_replicas=2, rank=r, shuffle=False)]
    assert len(padded) == n + 1 and len(set(padded)) == n
