"""Data sets read from disk batch by batch (data.stream, data.shards): the same images as in memory, never whole.

Real images: a Fashion-MNIST slice (grey, as a .npy and as a folder of PNGs) and 32x32 patches of three
scikit-image photographs (colour, as .npy in both channel layouts). Each split read from disk must give the
in-memory split's batches bit for bit, and the same fingerprints; the bad cases (a truncated .npy, a cache shard
cut short or rewritten while it is read, a disk too small for the cache, a damaged image in the middle of a
build) must give one line and leave no half-written cache, the previous one intact. The gather itself is
checked over random index sets by hypothesis, on small synthetic arrays (a pure function).
"""

from __future__ import annotations

import functools
import mmap
import os
import shutil
import threading
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aelab.data import folders, load_dataset, load_raw, own, shards, stream
from aelab.data.prefetch import Prefetcher
from aelab.data.stream import ArrayFile, ImageStore
from aelab.errors import DataError
from aelab.evaluation.cache import digest
from aelab.evaluation.metrics import latent_trustworthiness
from aelab.evaluation.passes import PixelRows, images_digest
from aelab.models.pca import PCAModel

N_FASHION = 600


@pytest.fixture(scope="module")
def fashion(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    (train_x, train_y, _, _), _ = load_raw("fashion-mnist")
    idx = np.sort(np.random.default_rng(3).choice(len(train_y), N_FASHION, replace=False))
    return train_x[idx], train_y[idx]


def photo_patches(side: int = 32) -> np.ndarray:
    """Non-overlapping side x side patches of three scikit-image photographs, uint8 (n, side, side, 3)."""
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        im = getattr(skimage.data, name)()
        h, w = (im.shape[0] // side) * side, (im.shape[1] // side) * side
        out.append(im[:h, :w].reshape(h // side, side, w // side, side, 3).swapaxes(1, 2).reshape(-1, side, side, 3))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory: pytest.TempPathFactory, fashion) -> Path:
    folder = tmp_path_factory.mktemp("arrays")
    np.save(folder / "grey.npy", fashion[0])
    patches = photo_patches()
    np.save(folder / "nhwc.npy", patches)
    np.save(folder / "nchw.npy", np.ascontiguousarray(np.moveaxis(patches, -1, 1)))
    return folder


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory, fashion) -> Path:
    root = tmp_path_factory.mktemp("pngs") / "fashion"
    for i, (x, y) in enumerate(zip(*fashion, strict=True)):
        path = root / f"class{y}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(path)
    return root


def fresh(pngs: Path, tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(pngs, root, ignore=shutil.ignore_patterns(own.CACHE_FOLDER))
    return root


def assert_same_splits(a, b) -> None:
    """Two bundles of the same data: the same shapes, labels, fingerprints, and batches bit for bit."""
    assert a.shape == b.shape and a.classes == b.classes and a.fingerprint == b.fingerprint
    rng = np.random.default_rng(0)
    for name in ("train", "val", "test"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert isinstance(sb.images, ImageStore) and isinstance(sa.images, torch.Tensor)
        assert tuple(sb.images.shape) == tuple(sa.images.shape) and torch.equal(sa.labels, sb.labels)
        for _ in range(3):
            idx = torch.from_numpy(rng.permutation(len(sa))[:64])  # a shuffled batch, as the trainer draws
            assert torch.equal(sb.images[idx], sa.images[idx])
        assert torch.equal(sb.images[5:70], sa.images[5:70]) and torch.equal(sb.images[3], sa.images[3])
    assert torch.equal(b.test.images[:], a.test.images)  # the whole split, gathered


# ------------------------------------------------------------------------------------------ npy: read in place
@pytest.mark.parametrize("name", ["grey.npy", "nhwc.npy", "nchw.npy"])
def test_an_npy_read_from_disk_gives_the_in_memory_batches(arrays_dir: Path, name: str) -> None:
    spec = f"npy:{arrays_dir / name}"
    memory = load_dataset(spec, stream=False, progress=False, val_fraction=0.1)
    mapped = load_dataset(spec, stream=True, progress=False, val_fraction=0.1)
    assert_same_splits(memory, mapped)
    assert mapped.train.images.files[0].path == arrays_dir / name  # the file itself: no copy was made
    assert "read from disk batch by batch" in mapped.notes[0]
    limited = load_dataset(spec, stream=True, progress=False, train_limit=50, classes=["0"])
    assert len(limited.train) == 50 and isinstance(limited.train.images, ImageStore)


def test_an_npy_converted_on_every_core_into_shards_gives_the_in_memory_conversion(arrays_dir, monkeypatch) -> None:
    """Grey to RGB and 28 to 20 pixels (resized as in memory, by conform) once, into shards beside the file."""
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 64)  # several tasks for the two processes
    spec = f"npy:{arrays_dir / 'grey.npy'}"
    memory = load_dataset(spec, stream=False, progress=False, image_size=20, channels=3)
    mapped = load_dataset(spec, stream=True, progress=False, image_size=20, channels=3)
    assert mapped.shape == (3, 20, 20)
    assert_same_splits(memory, mapped)
    assert "written to the cache" in mapped.notes[0] and (arrays_dir / own.CACHE_FOLDER / "grey-s20-c3.shards").is_dir()
    again = load_dataset(spec, stream=True, progress=False, image_size=20, channels=3)
    assert "from the cache" in again.notes[0] and again.fingerprint == memory.fingerprint


def test_the_rule_streams_what_exceeds_a_quarter_of_the_memory_available(arrays_dir, monkeypatch) -> None:
    size = (arrays_dir / "grey.npy").stat().st_size
    monkeypatch.delenv(stream.STREAM_ENV, raising=False)
    monkeypatch.setattr(stream, "available_memory", lambda: 4 * size - 4000)  # the pixels exceed a quarter
    assert isinstance(load_dataset(f"npy:{arrays_dir / 'grey.npy'}", progress=False).train.images, ImageStore)
    monkeypatch.setattr(stream, "available_memory", lambda: 100 * size)
    assert isinstance(load_dataset(f"npy:{arrays_dir / 'grey.npy'}", progress=False).train.images, torch.Tensor)
    monkeypatch.setenv(stream.STREAM_ENV, "1")
    assert isinstance(load_dataset(f"npy:{arrays_dir / 'grey.npy'}", progress=False).train.images, ImageStore)
    monkeypatch.setenv(stream.STREAM_ENV, "maybe")
    with pytest.raises(DataError, match="AELAB_STREAM='maybe': give 1"):
        load_dataset(f"npy:{arrays_dir / 'grey.npy'}", progress=False)


def test_digests_of_a_store_are_those_of_its_tensor(arrays_dir) -> None:
    memory = load_dataset(f"npy:{arrays_dir / 'nhwc.npy'}", stream=False, progress=False)
    mapped = load_dataset(f"npy:{arrays_dir / 'nhwc.npy'}", stream=True, progress=False)
    idx = np.arange(0, len(memory.train), 3)
    assert images_digest(mapped.train.images.subset(idx), memory.train.labels[idx]) == \
        digest(memory.train.images[idx], memory.train.labels[idx])
    codes = np.random.default_rng(1).normal(size=(len(memory.test), 4)).astype(np.float32)
    pixels = memory.test.images.reshape(len(memory.test), -1).numpy().astype(np.float32) / 255.0
    assert latent_trustworthiness(PixelRows(mapped.test.images), codes, n=50) == \
        latent_trustworthiness(pixels, codes, n=50)


def test_the_content_digest_of_a_file_read_from_disk_is_hashed_once_and_again_when_it_changes(
        arrays_dir, tmp_path, monkeypatch) -> None:
    """A file larger than memory is read through to hash it on the first load only: the memo is keyed by the
    file's stamp, so a rewritten file is hashed again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "grey.npy"
    shutil.copy(arrays_dir / "grey.npy", path)
    first = load_dataset(f"npy:{path}", stream=True, progress=False).fingerprint["content"]
    hashed = []
    real = own.content_digest
    monkeypatch.setattr(own, "content_digest", lambda *a: hashed.append(1) or real(*a))
    assert load_dataset(f"npy:{path}", stream=True, progress=False).fingerprint["content"] == first
    assert hashed == []  # remembered: the file was not read through again
    in_memory = load_dataset(f"npy:{path}", stream=False, progress=False).fingerprint["content"]
    assert in_memory == first
    hashed.clear()  # (the in-memory load hashes its arrays)
    x = np.load(path)
    x[0, 0, 0] ^= 1
    np.save(path, x)
    assert load_dataset(f"npy:{path}", stream=True, progress=False).fingerprint["content"] != first
    assert hashed == [1]


# ------------------------------------------------------------------------------------------ folders: shards
def test_a_folder_decoded_into_shards_gives_the_in_memory_batches(pngs, tmp_path, monkeypatch) -> None:
    root = fresh(pngs, tmp_path)
    monkeypatch.setattr(shards, "SHARD_BYTES", 784 * 100)  # several shards, and one cut mid-split
    memory = load_dataset(f"folder:{root}", stream=False, progress=False)
    mapped = load_dataset(f"folder:{root}", stream=True, progress=False)
    assert_same_splits(memory, mapped)
    cache = root / own.CACHE_FOLDER / "own-auto.shards"
    assert sorted(p.name for p in cache.iterdir()) == ["labels.npy", "manifest.json"] + [
        f"shard-{k:05d}.npy" for k in range(6)]
    assert "written to the cache" in mapped.notes[0] and len(mapped.train.images.files) == 6
    again = load_dataset(f"folder:{root}", stream=True, progress=False)
    assert "read batch by batch from the cache" in again.notes[0] and again.fingerprint == memory.fingerprint
    # the shards read into memory when streaming is not wanted: no second decode
    back = load_dataset(f"folder:{root}", stream=False, progress=False)
    assert isinstance(back.train.images, torch.Tensor) and torch.equal(back.train.images, memory.train.images)
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_decoding_on_two_processes_gives_the_pixels_of_one(pngs, monkeypatch) -> None:
    files = folders.scan(pngs).files
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 37)  # many chunks, the last one short
    parts = list(shards.decode_chunks(files, 1, (28, 28), progress=False, workers=2))
    assert [len(p) for p in parts] == [37] * 16 + [8]
    assert np.array_equal(np.concatenate(parts), folders.decode(files, 1, (28, 28), progress=False))
    monkeypatch.setattr(shards, "CHUNK_BYTES", 30 * 784)  # results larger than a slot: sent back through the pipe
    big = list(shards.decode_chunks(files, 1, (28, 28), progress=False, workers=2))
    assert np.array_equal(np.concatenate(big), np.concatenate(parts)) and not shards._SLOTS  # its memory released


def test_a_worker_hands_its_result_over_in_shared_memory_when_it_fits(pngs) -> None:
    files = folders.scan(pngs).files[:20]
    decode = functools.partial(folders.decode, channels=1, size=(28, 28), progress=False)
    shards._SLOTS[7] = mmap.mmap(-1, 3 * shards.CHUNK_BYTES)
    got = None
    try:
        assert shards._into_slot(decode, 7, 2, files) == ((20, 1, 28, 28), "|u1")  # written, not returned
        got = np.frombuffer(shards._SLOTS[7], np.uint8, 20 * 784, 2 * shards.CHUNK_BYTES).reshape(20, 1, 28, 28)
        assert np.array_equal(got, decode(files))
        assert isinstance(shards._into_slot(decode, 8, 0, files), np.ndarray)  # no shared memory: the array
    finally:
        del got
        shards._SLOTS.pop(7).close()


def test_a_folder_larger_than_memory_is_read_from_disk_not_refused(pngs, tmp_path, monkeypatch) -> None:
    root = fresh(pngs, tmp_path)
    monkeypatch.delenv(stream.STREAM_ENV, raising=False)
    monkeypatch.setattr(stream, "available_memory", lambda: 50_000)
    monkeypatch.setattr(own, "available_memory", lambda: 50_000)
    b = load_dataset(f"folder:{root}", progress=False)
    assert isinstance(b.train.images, ImageStore) and len(b.train) + len(b.val) + len(b.test) == N_FASHION


# ------------------------------------------------------------------------------------------ one line each
def test_a_truncated_npy_is_one_line(arrays_dir, tmp_path) -> None:
    cut = tmp_path / "cut.npy"
    cut.write_bytes((arrays_dir / "grey.npy").read_bytes()[:100_000])
    for flag in (True, False):
        with pytest.raises(DataError) as err:
            load_dataset(f"npy:{cut}", stream=flag, progress=False)
        assert len(str(err.value).splitlines()) == 1
        assert f"{cut} is truncated: its header says (600, 28, 28) uint8 (470,528 bytes)" in str(err.value)
        assert "holds 100,000 bytes" in str(err.value)


def test_a_shard_cut_short_or_rewritten_while_read_is_one_line_naming_it_and_the_fix(pngs, tmp_path, monkeypatch):
    root = fresh(pngs, tmp_path)
    monkeypatch.setattr(shards, "SHARD_BYTES", 784 * 100)
    b = load_dataset(f"folder:{root}", stream=True, progress=False)
    cache = root / own.CACHE_FOLDER / "own-auto.shards"
    victim = cache / "shard-00002.npy"  # images 200-299: training images (the test images are 480-599)
    b.train.images[np.arange(0, len(b.train), 7)]  # read: the shards are open
    with victim.open("r+b") as fh:
        fh.truncate(victim.stat().st_size - 784 * 10)
    with pytest.raises(DataError) as err:
        b.train.images[:]
    text = str(err.value)
    assert len(text.splitlines()) == 1 and f"{victim} changed while it was being read (" in text
    assert f"delete {cache} and run again (the folder is decoded anew)" in text
    assert len(b.test.images[:]) == 120  # the other shards read as before
    # rewritten in place, same size: a new modification time
    later = cache / "shard-00004.npy"
    os.utime(later, ns=(later.stat().st_atime_ns, later.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="shard-00004.npy changed while it was being read \\(rewritten\\)"):
        b.test.images[:]
    # opened again: the damaged cache is decoded anew, never trusted
    again = load_dataset(f"folder:{root}", stream=True, progress=False)
    assert "written to the cache" in again.notes[0] and again.fingerprint == b.fingerprint
    assert torch.equal(again.train.images[:], load_dataset(f"folder:{root}", stream=False,
                                                           progress=False).train.images)


def test_a_disk_too_small_for_the_cache_is_one_line_and_keeps_the_previous_cache(pngs, tmp_path, monkeypatch):
    root = fresh(pngs, tmp_path)
    first = load_dataset(f"folder:{root}", stream=True, progress=False)
    cache = root / own.CACHE_FOLDER / "own-auto.shards"
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(next((root / "class3").iterdir()))  # the key changes
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shards.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 123_456, 123_456))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", stream=True, progress=False)
    text = str(err.value)
    assert len(text.splitlines()) == 1 and "need 67.6 MB of disk for the decoded cache" in text
    assert f"but {root / own.CACHE_FOLDER} has 123.5 kB free" in text and "600 images of 1x28x28" in text
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before  # the previous cache, as it was
    assert [p.name for p in (root / own.CACHE_FOLDER).iterdir() if p.name.endswith(".tmp")] == []
    assert isinstance(first.train.images, ImageStore)


def test_a_damaged_image_mid_build_leaves_no_cache_and_the_previous_one_intact(pngs, tmp_path, monkeypatch):
    root = fresh(pngs, tmp_path)
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 50)  # the bad file is decoded after a shard was started
    load_dataset(f"folder:{root}", stream=True, progress=False)
    cache = root / own.CACHE_FOLDER / "own-auto.shards"
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    bad = sorted((root / "class9").iterdir())[-1]
    bad.write_bytes(bad.read_bytes()[:60])  # a PNG cut short
    with pytest.raises(DataError, match=f"{bad}: not a readable image"):
        load_dataset(f"folder:{root}", stream=True, progress=False)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    assert [p.name for p in (root / own.CACHE_FOLDER).iterdir() if p.name.endswith(".tmp")] == []


# ------------------------------------------------------------------------------------------ the store itself
LAYOUT_SHAPES = {"nhw": lambda n, c: (n, 5, 4), "nhwc": lambda n, c: (n, 5, 4, c), "nchw": lambda n, c: (n, c, 5, 4)}


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(sorted(LAYOUT_SHAPES)), colour=st.booleans(),
       counts=st.lists(st.integers(1, 9), min_size=1, max_size=4), data=st.data())
def test_any_index_gathers_what_numpy_indexing_gives(tmp_path_factory, layout, colour, counts, data) -> None:
    folder = tmp_path_factory.mktemp("store")
    c = 3 if colour and layout != "nhw" else 1
    rng = np.random.default_rng(sum(counts))
    parts = [rng.integers(0, 256, LAYOUT_SHAPES[layout](n, c), dtype=np.uint8) for n in counts]
    files = []
    for k, a in enumerate(parts):
        np.save(folder / f"{k}.npy", a)
        files.append(stream.open_npy(folder / f"{k}.npy", "fix"))
    whole = np.concatenate(parts)
    nchw = whole[:, None] if layout == "nhw" else np.moveaxis(whole, -1, 1) if layout == "nhwc" else whole
    store = ImageStore(files, layout)
    n = len(whole)
    rows = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=3 * n)), dtype=np.int64)
    view_idx = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)))
    assert np.array_equal(store.take(rows), nchw[rows])  # any order, repeats
    view = store.subset(view_idx, squeeze=True)
    ref = nchw[view_idx][:, 0] if c == 1 else nchw[view_idx]
    assert np.array_equal(view.numpy(), ref) and tuple(view.shape) == ref.shape
    lo, hi = sorted(data.draw(st.tuples(st.integers(0, len(view_idx)), st.integers(0, len(view_idx)))))
    assert torch.equal(view[lo:hi], torch.from_numpy(ref[lo:hi]))
    mask = rng.random(len(view_idx)) < 0.5
    assert torch.equal(view[torch.from_numpy(mask)], torch.from_numpy(ref[mask]))


def cut_under_the_reader(arrays_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    """The training store of a copy of grey.npy, then the file cut short by 50 images between the store's check
    and its read."""
    path = tmp_path / "grey.npy"
    shutil.copy(arrays_dir / "grey.npy", path)
    store = load_dataset(f"npy:{path}", stream=True, progress=False).train.images
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 784 * 50)
    monkeypatch.setattr(ArrayFile, "check", lambda self: None)
    return store


def test_a_read_that_comes_back_short_is_one_line_not_garbage(arrays_dir, tmp_path, monkeypatch) -> None:
    store = cut_under_the_reader(arrays_dir, tmp_path, monkeypatch)
    with pytest.raises(DataError, match=r"grey.npy ends before image 5[0-9]{2} its header promises \(cut short"):
        store[:]


def test_a_shuffled_batch_is_read_by_several_threads_and_their_errors_reach_the_caller(arrays_dir, tmp_path,
                                                                                       monkeypatch) -> None:
    """A batch of scattered rows (more runs than PARALLEL_RUNS) is read by the reader threads, into the right
    places; a file cut short under them is the same one line in the caller."""
    grey = np.load(arrays_dir / "grey.npy")
    store = load_dataset(f"npy:{arrays_dir / 'grey.npy'}", stream=True, progress=False, test_fraction=0.0001,
                         val_fraction=0.0).train.images
    rows = store.rows
    idx = np.random.default_rng(3).permutation(len(store))[:200]  # ~200 runs of one row each
    assert len(np.flatnonzero(np.diff(np.sort(rows[idx])) != 1)) + 1 >= stream.PARALLEL_RUNS
    used = []
    real = ArrayFile._read_runs
    monkeypatch.setattr(ArrayFile, "_read_runs", lambda self, fd, buf, runs: used.append(
        threading.current_thread().name) or real(self, fd, buf, runs))
    assert torch.equal(store[idx], torch.from_numpy(grey[rows[idx]]))
    assert len(used) == stream.READERS and all(name.startswith("aelab-read") for name in used)
    cut = cut_under_the_reader(arrays_dir, tmp_path, monkeypatch)
    with pytest.raises(DataError, match=r"grey.npy ends before image 5[0-9]{2} its header promises"):
        cut[np.random.default_rng(4).permutation(len(cut))]


def test_the_prefetcher_stops_early_and_passes_errors_on(arrays_dir) -> None:
    store = load_dataset(f"npy:{arrays_dir / 'grey.npy'}", stream=True, progress=False).train.images
    batches = [np.arange(i, i + 8) for i in range(0, 160, 8)]
    with Prefetcher(store, batches) as it:
        assert torch.equal(next(it), store[batches[0]]) and torch.equal(next(it), store[batches[1]])
    assert not it._thread.is_alive()  # stopped with 18 batches left
    with Prefetcher(store, [batches[0], np.array([10**9])]) as it:
        next(it)
        with pytest.raises(IndexError, match="out of bounds"):
            next(it)
    assert len(list(Prefetcher(store, batches[:3]))) == 3
    done = Prefetcher(store, batches[:1])
    assert len(list(done)) == 1
    with pytest.raises(StopIteration):  # past the end it says so again instead of waiting forever
        next(done)


def test_pca_fits_all_small_images_and_a_seeded_sample_of_large_ones() -> None:
    assert PCAModel.sample(54_000, 784) is None  # every built-in data set: all its images, as before
    big = PCAModel.sample(60_000, 128 * 128 * 3, seed=4)
    assert big is not None and len(big) == 1365 and np.array_equal(big, np.sort(big))
    assert np.array_equal(big, PCAModel.sample(60_000, 128 * 128 * 3, seed=4))
    patches = torch.from_numpy(np.ascontiguousarray(np.moveaxis(photo_patches(64), -1, 1)))
    pca = PCAModel(16, (3, 64, 64)).fit(patches, seed=1)  # 12,288 values: the randomized solver
    assert pca.pca.svd_solver == "randomized" and pca.fitted_on == len(patches)
    exact = PCAModel(16, (3, 64, 64))
    exact.pca.set_params(svd_solver="full").fit(patches.reshape(len(patches), -1).numpy().astype(np.float32) / 255)
    ratio = pca.pca.explained_variance_.sum() / exact.pca.explained_variance_.sum()
    assert 0.99 < ratio <= 1.0 + 1e-6  # the leading components, to 1% of the variance they explain
