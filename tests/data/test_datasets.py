"""Data: the real IDX files, checksums, malformed files, discovery order, download from a local server."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from aelab.data import datasets as data
from aelab.data import idx
from aelab.errors import DataError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIRS", {})


def test_fashion_mnist_loads_verified_with_official_counts(data_root):
    b = data.load_dataset("fashion-mnist", data_dir=data_root, val_fraction=0.1, seed=0)
    assert b.train.images.dtype.is_floating_point is False and b.train.images.shape[1:] == (28, 28)
    assert len(b.train) == 54000 and len(b.val) == 6000 and len(b.test) == 10000
    assert np.bincount(b.test.labels.numpy()).tolist() == [1000] * 10
    assert b.classes[0] == "T-shirt/top" and b.classes[9] == "Ankle boot"


def test_mnist_loads_with_official_test_counts(data_root):
    b = data.load_dataset("mnist", data_dir=data_root, val_fraction=0.0)
    assert np.bincount(b.test.labels.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert len(b.train) == 60000


def test_validation_split_is_seeded_and_disjoint(data_root):
    tr, va = data.split_indices(60000, 0.1, seed=3)
    tr2, va2 = data.split_indices(60000, 0.1, seed=3)
    _, va3 = data.split_indices(60000, 0.1, seed=4)
    assert np.array_equal(va, va2) and not np.array_equal(va, va3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 60000


def test_class_subsets_by_name_and_index(data_root):
    by_name = data.load_dataset("fashion-mnist", classes=["T-shirt/top", "trouser"], val_fraction=0.1)
    by_index = data.load_dataset("fashion-mnist", classes=["0", 1], val_fraction=0.1)
    assert set(by_name.test.labels.tolist()) == {0, 1} and len(by_name.test) == 2000
    assert np.array_equal(by_name.train.labels, by_index.train.labels)
    assert len(by_name.train) + len(by_name.val) == 12000
    with pytest.raises(DataError, match="unknown class 'Hat'"):
        data.load_dataset("fashion-mnist", classes=["Hat"])


def _copy_dataset(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for stem in data.FILES:
        shutil.copy(src / f"{stem}.gz", dst / f"{stem}.gz")
    return dst


def test_checksum_mismatch_is_an_error(data_root, tmp_path):
    folder = _copy_dataset(data_root / "mnist", tmp_path / "mnist")
    raw = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    with pytest.raises(DataError, match="checksum mismatch"):
        idx.read_idx(folder / "t10k-labels-idx1-ubyte.gz", data.DATASETS["mnist"].sha256["t10k-labels-idx1-ubyte"])


def test_truncated_gzip_is_an_error(data_root, tmp_path):
    f = tmp_path / "t10k-images-idx3-ubyte.gz"
    f.write_bytes((data_root / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()[:100_000])
    with pytest.raises(DataError, match="truncated"):
        idx.read_idx(f, None)


def test_wrong_magic_and_shape_are_errors():
    with pytest.raises(DataError, match="wrong IDX magic 2052"):
        idx.parse_idx(struct.pack(">I", 2052) + b"\0" * 16)
    with pytest.raises(DataError, match=r"shape \(32, 32\)"):
        idx.parse_idx(struct.pack(">IIII", 2051, 1, 32, 32) + b"\0" * 1024)
    with pytest.raises(DataError, match="holds 10 bytes"):
        idx.parse_idx(struct.pack(">II", 2049, 11) + b"\0" * 10)


def test_discovery_prefers_explicit_dir_then_env(data_root, tmp_path, monkeypatch):
    explicit = _copy_dataset(data_root / "mnist", tmp_path / "explicit" / "mnist")
    monkeypatch.setenv("AELAB_DATA_DIR", str(data_root))
    assert data.find_dataset("mnist", tmp_path / "explicit", download=False) == explicit
    assert data.find_dataset("mnist", None, download=False) == data_root / "mnist"


def test_not_found_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        data.find_dataset("mnist", None, download=False)
    msg = str(err.value)
    assert "nowhere" in msg and "cache" in msg and "AELAB_DATA_DIR" in msg and "\n" not in msg


def test_an_explicit_data_dir_missing_a_file_is_an_error_not_a_fall_back(data_root, tmp_path, monkeypatch):
    """Seen: a --data-dir lacking one file fell back to AELAB_DATA_DIR while config.yaml recorded the given one."""
    partial = _copy_dataset(data_root / "mnist", tmp_path / "partial" / "mnist")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("AELAB_DATA_DIR", str(data_root))  # a complete copy that must not be used
    with pytest.raises(DataError) as err:
        data.find_dataset("mnist", tmp_path / "partial", download=False)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(partial) in msg and "--data-dir" in msg and "\n" not in msg


class _Server:
    """A local HTTP server on 127.0.0.1 serving a folder (bounded: it stops with the test)."""

    def __init__(self, root: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_from_local_mirror_into_cache(data_root, tmp_path, monkeypatch):
    monkeypatch.delenv("AELAB_DATA_DIR", raising=False)
    with _Server(data_root) as srv:
        folder = data.find_dataset("mnist", None, download=True, mirrors=[srv.url + "mnist/"])
    assert folder == tmp_path / "cache" / "aelab" / "mnist"
    b = data.load_dataset("mnist", val_fraction=0.0)
    assert len(b.train) == 60000 and b.source == str(folder)
    assert not list(folder.glob("*.part"))


def test_download_rejects_corrupted_and_truncated_files(data_root, tmp_path, monkeypatch):
    served = _copy_dataset(data_root / "mnist", tmp_path / "served")
    good = (served / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = bytearray(gzip.decompress(good))
    raw[100] ^= 1
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    dest = tmp_path / "dl" / "t10k-labels-idx1-ubyte.gz"
    sha = data.DATASETS["mnist"].sha256["t10k-labels-idx1-ubyte"]
    with _Server(served) as srv:
        with pytest.raises(DataError, match="checksum mismatch"):
            idx.download_file("t10k-labels-idx1-ubyte", dest, sha, [srv.url], retries=2, progress=False)
        (served / "t10k-labels-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])
        with pytest.raises(DataError, match="truncated"):
            idx.download_file("t10k-labels-idx1-ubyte", dest, sha, [srv.url], retries=1, progress=False)
        assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written
        (served / "t10k-labels-idx1-ubyte.gz").write_bytes(good)
        idx.download_file("t10k-labels-idx1-ubyte", dest, sha, ["http://127.0.0.1:9/", srv.url], retries=1,
                           progress=False)
    assert dest.read_bytes() == good
