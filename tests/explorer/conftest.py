"""Fixtures of the explorer tests: two tiny real runs trained through the ``aelab`` CLI, and the app on each.

The runs are trained once per session (2,000 training images, 1 epoch, one thread, no evaluation: ~20 s
each on 2 cores); the apps load them once each (encoding the 10,000 test images: ~5 s).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from aelab.explorer import create_app
from tests.conftest import aelab_exe

TINY = ("--train-limit", "2000", "--epochs", "1", "--threads", "1", "--no-report", "--no-eval", "-q")


def train(out: Path, *args: str) -> Path:
    proc = subprocess.run([aelab_exe(), "train", *args, *TINY, "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (out / "best.safetensors").is_file()
    return out


@pytest.fixture(scope="session")
def run16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real conv-modified run with a 16-D latent (the default model)."""
    return train(tmp_path_factory.mktemp("explore") / "l16", "--latent", "16")


@pytest.fixture(scope="session")
def run2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run with a 2-D latent (preset seed-2d): the map is the latent space itself."""
    return train(tmp_path_factory.mktemp("explore") / "l2", "--preset", "seed-2d")


@pytest.fixture(scope="session")
def run_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real VAE run (latent 8): the page offers samples from its prior."""
    return train(tmp_path_factory.mktemp("explore") / "vae8", "--model", "vae", "--latent", "8")


@pytest.fixture(scope="session")
def app16(run16: Path) -> Starlette:
    return create_app(run16, max_upload_bytes=1_000_000, max_batch=256, threads=1)


@pytest.fixture(scope="session")
def client16(app16: Starlette) -> Iterator[TestClient]:
    with TestClient(app16, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def client2d(run2d: Path) -> Iterator[TestClient]:
    with TestClient(create_app(run2d, threads=1), raise_server_exceptions=False) as client:
        yield client


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    """``aelab explore RUN --port 0 --no-open`` (the real command) on 127.0.0.1 and a free port in a child process;
    (process, URL) once it serves."""
    proc = subprocess.Popen([aelab_exe(), "explore", str(run), "--port", "0", "--no-open"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "serving http://" in line:
            return proc, line.split("serving ", 1)[1].split()[0]
    proc.wait(timeout=30)
    raise AssertionError("the explorer did not start:\n" + "".join(seen[-20:]))


def stop_server(proc: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C (SIGINT) to the server; (exit code, what it printed after)."""
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
    return proc.returncode, rest
