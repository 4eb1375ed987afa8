"""Shared fixtures: the real data beside the checkout, and small real training runs reused across tests.

Tests that need the real data ask for ``data_root`` (directly or through a run fixture); without the data they
skip with a message that says where to put it. Pure unit tests (metrics on synthetic tensors, config, models,
the architecture contracts) run without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from aelab.config import resolve
from aelab.experiments.jobs import train_job

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    # AELAB_DATA_DIR, when set, is the only place looked at (so that a run without the data can be tried).
    given = os.environ.get("AELAB_DATA_DIR")
    for cand in (given,) if given else (REPO.parent / "shared" / "data",):
        if cand and (Path(cand) / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(cand)
    if given:
        return None
    if Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        return Path("/usr/share/datasets")
    return None


DATA_ROOT = _data_root()
if DATA_ROOT is not None:
    os.environ["AELAB_DATA_DIR"] = str(DATA_ROOT)


NO_DATA = ("the real data was not found: set AELAB_DATA_DIR to the folder holding fashion-mnist/ and mnist/ "
           "(e.g. ../shared/data) to run this test")
# Modules of pure unit tests: they run without the data (their few real-data tests ask for ``data_root``).
# Every other test module trains, evaluates or reads real images, and skips whole without the data.
PURE_MODULES = {"test_architecture.py", "test_config.py", "test_models.py", "test_metrics.py", "test_fastpath.py",
                "test_robustness.py", "test_knn_sample.py",
                "test_vae.py", "test_noise.py", "test_own_images.py", "test_output_paths.py",
                "test_config_hardening.py", "test_machine_facts.py", "test_projection.py", "test_real_sizes_e2e.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if DATA_ROOT is not None:
        return
    skip = pytest.mark.skip(reason=NO_DATA)
    for item in items:
        if item.path.name not in PURE_MODULES:
            item.add_marker(skip)


def aelab_exe() -> str:
    """The installed console script (next to the interpreter running the tests)."""
    import sys

    exe = Path(sys.executable).with_name("aelab")
    found = str(exe) if exe.exists() else shutil.which("aelab")
    assert found, "the aelab console script is not installed (pip install -e .)"
    return found


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding fashion-mnist/ and mnist/; the test skips, saying so, when there is none."""
    if DATA_ROOT is None:
        pytest.skip(NO_DATA)
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """A real, evaluated conv-modified run (latent 16) on a 3,000-image slice, 1 epoch."""
    out = tmp_path_factory.mktemp("runs") / "tiny16"
    cfg = resolve(overrides=dict(train_limit=3000, epochs=1, latent=16, threads=1, report=False))
    run, metrics = train_job(cfg, out=out, progress=False)
    return run, metrics


@pytest.fixture(scope="session")
def tiny_run_2d(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """A real, evaluated conv run with a 2-D latent on a 3,000-image slice, 1 epoch."""
    out = tmp_path_factory.mktemp("runs") / "tiny2d"
    cfg = resolve("seed-2d", overrides=dict(train_limit=3000, epochs=1, threads=1, report=False))
    run, metrics = train_job(cfg, out=out, progress=False)
    return run, metrics


@pytest.fixture(scope="session")
def run_path(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A real conv-modified run (batch norm, dropout, transposed convs), latent 16, width 0.5, 2 epochs on
    2,000 training images, not evaluated; shared by the model-use, API and export tests."""
    out = tmp_path_factory.mktemp("run") / "small16"
    cfg = resolve(overrides=dict(train_limit=2000, epochs=2, batch_size=64, latent=16, width=0.5, threads=1,
                                 report=False))
    train_job(cfg, out=out, progress=False, evaluate=False)
    return out


@pytest.fixture(scope="session")
def vae_run_path(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A real VAE run (model vae: the conv-modified backbone, width 0.5, latent 8, Bernoulli likelihood, a one-epoch
    KL warm-up), 3 epochs on 2,000 training images, not evaluated; shared by the VAE evaluation, sampling,
    report and export tests."""
    out = tmp_path_factory.mktemp("run") / "vae8"
    cfg = resolve(overrides=dict(model="vae", latent=8, width=0.5, train_limit=2000, epochs=3, batch_size=64,
                                 kl_warmup=1, threads=1, report=False))
    train_job(cfg, out=out, progress=False, evaluate=False)
    return out
