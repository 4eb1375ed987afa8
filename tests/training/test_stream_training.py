"""Training and evaluating on a data set read from disk (data.stream): the run of the same data in memory.

Real images: a Fashion-MNIST slice saved as .npy (and as PNG folders for the processes test). The run from disk
must reach the in-memory run's losses and weights bit for bit (same images, same order, same arithmetic:
the prefetch thread only gathers), resume exactly, and evaluate to the same metrics. A ~1 GB .npy of repeated
real images is trained on in a child process whose peak resident memory must stay far below the file's size:
the child reads its own high-water mark (``VmHWM``), because ``ru_maxrss`` (of RUSAGE_SELF in the child, or
RUSAGE_CHILDREN in the parent) also counts the parent's memory at the fork and other tests' children.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import aelab
from aelab.cli import main
from aelab.config import resolve
from aelab.data import load_dataset, load_raw
from aelab.data.own import CACHE_FOLDER
from aelab.data.stream import ImageStore
from aelab.errors import ConfigError
from aelab.evaluation import evaluate_test, fit_pca
from aelab.runs import Run
from aelab.training import Trainer
from tests.conftest import aelab_exe
from tests.resume import model_weights, straight_and_resumed
from tests.training.test_distributed import history

N = 700


@pytest.fixture(scope="module")
def npy(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    (train_x, train_y, _, _), _ = load_raw("fashion-mnist")
    path = tmp_path_factory.mktemp("npy") / "fashion.npy"
    np.save(path, train_x[np.sort(np.random.default_rng(11).choice(len(train_x), N, replace=False))])
    return path


def config(path: Path, **extra: object):
    return resolve(overrides={**dict(dataset=f"npy:{path}", latent=8, width=0.5, epochs=2, batch_size=64,
                                     threads=1, precision="fp32", report=False), **extra})


def test_the_run_from_disk_is_the_in_memory_run_and_resumes_exactly(npy: Path, tmp_path: Path) -> None:
    cfg = config(npy)  # the default conv-modified model: batch norm, dropout, channels-last
    memory = load_dataset(cfg.dataset, stream=False, progress=False, **cfg.data_kwargs())
    mapped = load_dataset(cfg.dataset, stream=True, progress=False, **cfg.data_kwargs())
    assert isinstance(mapped.train.images, ImageStore) and isinstance(memory.train.images, torch.Tensor)
    ref = Run(tmp_path / "memory")
    ref.path.mkdir()
    trainer = Trainer(cfg, ref, bundle=memory, progress=False)
    trainer.fit()
    straight, parted = straight_and_resumed(cfg, mapped, tmp_path)  # a Ctrl-C after epoch 1, resumed
    losses = [(h["train_loss"], h["val_loss"]) for h in history(ref.path)]
    for run in (straight, parted):
        assert [(h["train_loss"], h["val_loss"]) for h in history(run.path)] == losses
        mine, theirs = model_weights(run.last), model_weights(ref.last)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # bit for bit

    model = trainer.model
    pca = fit_pca(memory, cfg.latent)
    assert torch.equal(torch.from_numpy(fit_pca(mapped, cfg.latent).pca.components_),
                       torch.from_numpy(pca.pca.components_))
    a, pa = evaluate_test(model, memory, pca, seed=cfg.seed)
    b, pb = evaluate_test(model, mapped, pca, seed=cfg.seed)
    assert a == b  # every metric, overall and per class, autoencoder and PCA
    assert np.array_equal(pa.codes, pb.codes) and np.array_equal(pa.recon, pb.recon)


def test_denoising_on_a_data_set_read_from_disk_is_refused_in_one_line(npy: Path, tmp_path: Path) -> None:
    cfg = config(npy, noise="gaussian:0.2", epochs=1)
    mapped = load_dataset(cfg.dataset, stream=True, progress=False, **cfg.data_kwargs())
    with pytest.raises(ConfigError, match="denoising needs the validation images in memory") as err:
        Trainer(cfg, Run(tmp_path), bundle=mapped, progress=False)
    assert len(str(err.value).splitlines()) == 1


CHILD = """
import json, resource, sys, time
from pathlib import Path
from aelab.config import resolve
from aelab.data import load_dataset
from aelab.evaluation.passes import images_digest
from aelab.runs import Run
from aelab.training import Trainer

path, out = sys.argv[1], Path(sys.argv[2])
cfg = resolve(overrides=dict(dataset=f"npy:{path}", model="dense", width=0.25, latent=16, epochs=1,
                             batch_size=128, threads=2, train_limit=4096, report=False, precision="fp32"))
t0 = time.perf_counter()
bundle = load_dataset(cfg.dataset, progress=False, **cfg.data_kwargs())  # the content digest reads every image
loaded = time.perf_counter() - t0
state = Trainer(cfg, Run(out), bundle=bundle, progress=False).fit()
images_digest(bundle.test.images, bundle.test.labels)  # a pass over the whole test split (a fifth of the file)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
peak = hwm[0] / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"maxrss_mb": peak, "loaded_s": loaded,
                  "streamed": type(bundle.train.images).__name__, "images": len(bundle.train) + len(bundle.test),
                  "batches": state.step, "images_per_s": state.history[-1]["images_per_s"]}))
"""


@pytest.mark.slow
def test_a_1_gb_npy_trains_in_a_fraction_of_its_size_in_memory(tmp_path: Path, data_root: Path) -> None:
    (train_x, _, _, _), _ = load_raw("fashion-mnist")
    rows = (1 << 30) // 784
    path = tmp_path / "big.npy"
    with path.open("wb") as fh:  # the real images, repeated, written chunk by chunk
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (rows, 28, 28)})
        for i in range(0, rows, len(train_x)):
            fh.write(train_x[:rows - i].tobytes())
    size = path.stat().st_size
    env = {**os.environ, "AELAB_STREAM": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "run")], capture_output=True,
                       text=True, env=env, timeout=300)
    path.unlink()
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"1 GB .npy, {got}")
    assert got["streamed"] == "ImageStore" and got["images"] == 4096 + round(rows * 0.2)
    assert got["batches"] == 32  # 4,096 training images in batches of 128
    assert got["maxrss_mb"] < 600 and got["maxrss_mb"] * 1e6 < 0.6 * size, got


@pytest.mark.slow
# Known defect, not understood yet: in 1 of 2 full-suite runs on 2026-12-05 (a 2-core Xeon), rank 1 of the run
# read from disk died with SIGABRT "terminate called without an active exception"; the other run passed, and so
# does the test alone. Not reproduced since in 15 runs of its command in a loop beside a training (no DDP module
# was left alive at destroy_process_group either). The ranks now collect garbage before destroying the group and
# print every thread's Python stack if they die of a signal (PYTHONFAULTHANDLER): the next occurrence says where.
# Kept running (it checks the shared cache when it passes); the mark goes once the cause is known.
@pytest.mark.xfail(strict=False, reason="rank 1 from disk sometimes dies with SIGABRT at the end (issue 30)")
def test_two_processes_share_one_folder_cache_and_train_the_in_memory_run(npy: Path, tmp_path: Path) -> None:
    images = np.load(npy)
    src = tmp_path / "pngs"
    for i, x in enumerate(images[:600]):
        (src / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(src / f"c{i % 3}" / f"{i:04d}.png")
    common = ["--model", "dense", "--latent", "8", "--width", "0.5", "--batch-size", "63", "--threads", "1",
              "--no-report", "--patience", "0", "--precision", "fp32", "--schedule", "constant", "--optimizer",
              "sgd", "--lr", "0.05", "--epochs", "6", "-q"]
    runs = {}
    for name, nproc, flag in (("memory", "1", "0"), ("disk", "2", "1")):
        root = tmp_path / name
        shutil.copytree(src, root)
        r = subprocess.run([aelab_exe(), "train", *common, "--dataset", f"folder:{root}", "--out",
                            str(tmp_path / f"run-{name}"), "--nproc", nproc], capture_output=True, text=True,
                           env={**os.environ, "AELAB_STREAM": flag}, timeout=300)
        assert r.returncode == 0, r.stderr
        runs[name] = tmp_path / f"run-{name}"
    cache = sorted(p.name for p in (tmp_path / "disk" / CACHE_FOLDER).iterdir())
    assert cache == [".own-auto.shards.lock", "own-auto.shards"]  # built once, by one rank; nothing left over
    a, b = history(runs["memory"]), history(runs["disk"])
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-5), (ra, rb)
    ma = json.loads((runs["memory"] / "metrics.json").read_text())
    mb = json.loads((runs["disk"] / "metrics.json").read_text())
    assert mb["split"] == ma["split"] | {"source": mb["split"]["source"]}
    assert mb["pca"]["overall"] == pytest.approx(ma["pca"]["overall"], rel=1e-6)
    assert mb["autoencoder"]["overall"]["ssim"] == pytest.approx(ma["autoencoder"]["overall"]["ssim"], abs=1e-4)


@pytest.mark.slow
def test_a_run_from_disk_through_the_commands(npy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train (with its evaluation and report), evaluate, encode, score and the Python API on a .npy read from
    disk: every command reads the store as it would the tensor."""
    monkeypatch.setenv("AELAB_STREAM", "1")
    run = tmp_path / "run"

    def cli(*args: object) -> object:
        res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res

    res = cli("train", "--dataset", f"npy:{npy}", "--model", "dense", "--latent", "8", "--width", "0.5", "--epochs",
              "2", "--threads", "1", "--precision", "fp32", "--out", run, "-q")
    assert "test SSIM" in res.output and (run / "report.html").stat().st_size > 10_000
    record = json.loads((run / "data.json").read_text())
    assert any("read from disk batch by batch" in note for note in record["notes"])
    memory = load_dataset(f"npy:{npy}", stream=False, progress=False)
    assert record["fingerprint"]["content"] == memory.fingerprint["content"]  # the same data as in memory
    metrics = json.loads((run / "metrics.json").read_text())
    again = cli("evaluate", run)
    assert f"{metrics['autoencoder']['overall']['ssim']:.4f}" in again.output and "warning" not in again.stderr
    cli("encode", run, "data:test", "-o", tmp_path / "codes.npy")
    model = aelab.load(run)
    np.testing.assert_allclose(np.load(tmp_path / "codes.npy"), model.encode(memory.test.images.numpy()), atol=1e-5)
    cli("score", run, "data:test", "-o", tmp_path / "scores.csv")
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 1 + len(memory.test)
