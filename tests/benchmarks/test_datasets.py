"""benchmarks/datasets.py builds the real data of issue 30 right: the patch set split by photograph (by name and
by content), deterministic, read by aelab; Fashion-MNIST enlarged with the same content; the big .npy of the
asked size, written without being held in memory; bad options as one line, nothing written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aelab.data import load_dataset, load_raw

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "datasets.py"


def _load() -> object:
    """The script as a module, under a name that cannot shadow a package called ``datasets``."""
    spec = importlib.util.spec_from_file_location("bench_datasets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_datasets"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


ds = _load()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return ds.load_photos()


@pytest.fixture(scope="module")
def patches32(photos: dict[str, np.ndarray]):
    return ds.build_patches(32, photos=photos)


def _rows(x: np.ndarray) -> set[bytes]:
    return {p.tobytes() for p in x}


def test_photographs_are_bundled_rgb_and_distinct(photos: dict[str, np.ndarray]) -> None:
    assert list(photos) == list(ds.PHOTOS) and len(photos) == 10
    for name, img in photos.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 300, name
    # no photograph twice (skimage's cat() is chelsea(): left out for that reason)
    assert len({img.tobytes() for img in photos.values()}) == len(photos)
    assert "cat" in ds.LEFT_OUT


def test_patch_split_is_by_photograph_by_name_and_content(patches32) -> None:
    ps = patches32
    test_ids = {ps.classes.index(n) for n in ds.TEST_PHOTOS}
    assert set(np.unique(ps.y_test)) == test_ids
    assert not set(np.unique(ps.y)) & test_ids and set(np.unique(ps.y)) == set(range(10)) - test_ids
    assert not _rows(ps.x_test) & _rows(ps.x)  # no test patch equals any training patch
    for name, c in ps.counts.items():
        h, w = c["h"], c["w"]
        if name in ds.TEST_PHOTOS:  # the non-overlapping grid
            assert c == {"train": 0, "test": (h // 32) * (w // 32), "h": h, "w": w}, name
        else:  # coverage 4 x the area in random patches
            assert c["test"] == 0 and c["train"] == round(4 * h * w / 32**2), name
    assert sum(c["train"] for c in ps.counts.values()) == len(ps.x)


@pytest.mark.parametrize("size", [32, 64])
def test_patch_shapes_dtypes_and_pixels(size: int, photos: dict[str, np.ndarray]) -> None:
    ps = ds.build_patches(size, photos=photos)
    assert ps.x.shape[1:] == ps.x_test.shape[1:] == (size, size, 3)
    assert ps.x.dtype == ps.x_test.dtype == np.uint8 and ps.y.dtype == ps.y_test.dtype == np.int64
    assert len(ps.y) == len(ps.x) > 1000 if size == 32 else len(ps.x) > 3000
    # every test patch is the photograph's pixels at its grid cell (first cell of the first test photograph)
    first = ps.classes[ps.y_test[0]]
    ty, tx = ds.grid(photos[first].shape, size)
    assert np.array_equal(ps.x_test[0], photos[first][ty[0]:ty[0] + size, tx[0]:tx[0] + size])
    # training patches are the photographs' pixels at the seeded positions, labelled with their photograph
    train = [n for n in ds.PHOTOS if n not in ds.TEST_PHOTOS]
    pid, ys, xs = ds.draw(photos, train, size, 4.0, seed=0, copy=0)
    for i in range(0, len(ps.x), 997):
        name = train[pid[i]]
        assert ps.classes[ps.y[i]] == name
        assert np.array_equal(ps.x[i], photos[name][ys[i]:ys[i] + size, xs[i]:xs[i] + size])


def test_builds_are_deterministic_and_the_seed_matters(patches32, photos: dict[str, np.ndarray]) -> None:
    again = ds.build_patches(32, photos=ds.load_photos())
    assert ds.content_digest(again.arrays()) == ds.content_digest(patches32.arrays())
    other = ds.build_patches(32, seed=1, photos=photos)
    assert ds.content_digest(other.arrays()) != ds.content_digest(patches32.arrays())
    assert np.array_equal(other.x_test, patches32.x_test)  # the test grid does not depend on the seed


def test_cli_writes_a_patch_npz_aelab_reads(tmp_path: Path) -> None:
    assert ds.main(["patches", "--size", "32", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patches-32.json", "patches-32.npz"]  # no temp left
    path = tmp_path / "patches-32.npz"
    record = json.loads((tmp_path / "patches-32.json").read_text())
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    assert record["digest"] == ds.content_digest(arrays) and record["test_photos"] == list(ds.TEST_PHOTOS)
    bundle = load_dataset(f"npz:{path}", progress=False)
    assert bundle.shape == (3, 32, 32) and bundle.classes == tuple(ds.PHOTOS)
    assert len(bundle.test) == len(arrays["x_test"]) and len(bundle.train) + len(bundle.val) == len(arrays["x"])
    assert np.array_equal(bundle.test.images.numpy(), arrays["x_test"].transpose(0, 3, 1, 2))


@pytest.mark.parametrize("size, close", [(64, 5.0), (128, 3.0)])
def test_fashion_enlarged_keeps_the_content(size: int, close: float, data_root: Path, tmp_path: Path) -> None:
    assert ds.main(["fashion", "--size", str(size), "--limit", "200", "--out", str(tmp_path)]) == 0
    path = tmp_path / f"fashion-mnist-{size}-limit200.npz"
    (train_x, train_y, test_x, test_y), _ = load_raw("fashion-mnist")
    with np.load(path) as z:
        x, y, x_test, y_test = z["x"], z["y"], z["x_test"], z["y_test"]
    assert x.shape == x_test.shape == (200, size, size) and x.dtype == np.uint8
    assert np.array_equal(y, train_y[:200]) and np.array_equal(y_test, test_y[:200])
    for big, small in ((x, train_x[:200]), (x_test, test_x[:200])):
        # bilinear back to 28x28 samples the enlarged image at the original pixel centres: close to the original
        # (a transposed, shifted or other image is 20-70 grey levels away)
        back = F.interpolate(torch.from_numpy(big).float()[:, None], size=(28, 28), mode="bilinear",
                             align_corners=False, antialias=False)[:, 0].numpy()
        assert np.abs(back - small).mean() < close
        assert abs(float(big.mean()) - float(small.mean())) < 1.0  # the same brightness
    # the same as Pillow's bilinear resize, to the rounding (a nearest or shifted resize is ~8 grey levels off)
    pil = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in train_x[:20]])
    assert np.abs(x[:20].astype(int) - pil).max() <= 1
    bundle = load_dataset(f"npz:{path}", progress=False)
    assert bundle.shape == (1, size, size) and bundle.classes[0] == "T-shirt/top" and len(bundle.test) == 200


def _build_big_in_child(out: Path, chunk_mb: float) -> float:
    """Build 80 MB of 32x32 patches in a child process; the growth of its peak resident memory in MB, from
    just before the build (the peak reset there) to its end."""
    code = f"""
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("bench_datasets", {str(SCRIPT)!r})
m = importlib.util.module_from_spec(spec); sys.modules["bench_datasets"] = m; spec.loader.exec_module(m)
photos = m.load_photos()
def kb(key):  # this process's own figures (getrusage's ru_maxrss may carry the parent's peak over a vfork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the present
    before = kb("VmRSS")
except OSError:
    before = kb("VmHWM")
m.build_big(Path({str(out)!r}), 32, 0.08, chunk_mb={chunk_mb}, progress=False, photos=photos)
print(max(0, kb("VmHWM") - before))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1]) / 1024


def test_big_npy_has_the_asked_size_and_is_never_held(tmp_path: Path, patches32) -> None:
    out = tmp_path / "big.npy"
    growth_mb = _build_big_in_child(out, chunk_mb=4)
    assert growth_mb < 30, f"peak memory grew by {growth_mb:.0f} MB while writing an 80 MB file in 4 MiB chunks"
    n = 80_000_000 // (32 * 32 * 3)
    big = np.load(out, mmap_mode="r")
    assert big.shape == (n, 32, 32, 3) and big.dtype == np.uint8
    assert out.stat().st_size == big.offset + n * 32 * 32 * 3 and 79.9e6 < out.stat().st_size < 80.1e6
    k = len(patches32.x)
    assert np.array_equal(big[:k], patches32.x)  # copy 0: the patch set's training images, in order
    second = np.asarray(big[k:n])  # copy 1: new positions, mirrored
    seen = _rows(patches32.x)
    again = np.array([p.tobytes() in seen for p in second])
    # only near-constant patches (the retina's black corners, ~5% of the patches) recur across copies
    assert again.mean() < 0.1 and (second[again].reshape(again.sum(), -1).std(axis=1) < 1).all()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["images"] == n and record["copies"] == -(-n // k)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.json", "big.npy"]


def test_the_memory_check_sees_a_file_held_whole(tmp_path: Path) -> None:
    """The instrument of the test above: the same build in one 1000 MiB chunk holds the file, and shows."""
    assert _build_big_in_child(tmp_path / "big.npy", chunk_mb=1000) > 70


@pytest.mark.parametrize("args, says", [
    (["patches", "--test-photos", "astronaut", "lena"], "unknown photograph 'lena'"),
    (["patches", "--test-photos", *ds.PHOTOS], "leave at least one for training"),
    (["patches", "--size", "400"], "patches must be 4 to 300 pixels"),
    (["big", "--gb", "0"], "--gb 0"),
    (["big", "--gb", "nan"], "--gb nan"),
    (["patches", "--coverage", "0"], "--coverage 0"),
    (["fashion", "--size", "16"], "--size 16"),
])
def test_bad_options_give_one_line_and_write_nothing(args: list[str], says: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert ds.main([*args, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not any((tmp_path / "out").iterdir())


def test_a_disk_too_small_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "big", "--gb", "1e9", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "GB free there; free some space or give a smaller --gb" in proc.stderr
    assert not any(tmp_path.iterdir())


@settings(max_examples=30, deadline=None)
@given(h=st.integers(4, 90), w=st.integers(4, 90), size=st.integers(4, 40), k=st.integers(0, 7))
def test_grid_cells_are_disjoint_and_inside_and_the_symmetries_differ(h: int, w: int, size: int, k: int) -> None:
    img = np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3) % 251
    ys, xs = ds.grid((h, w), size)
    assert len(ys) == (h // size) * (w // size)
    cover = np.zeros((h, w), dtype=int)
    for y, x in zip(ys, xs, strict=True):
        cover[y:y + size, x:x + size] += 1
    assert cover.max(initial=0) <= 1 and (ys >= 0).all() and (ys + size <= h).all() and (xs + size <= w).all()
    if len(ys):
        cut = ds.cut([img.astype(np.uint8)], size, np.zeros(len(ys), dtype=np.int64), ys, xs)
        assert np.array_equal(cut[-1], img[ys[-1]:ys[-1] + size, xs[-1]:xs[-1] + size])
        turned = ds.symmetry(cut, k)
        assert turned.shape == cut.shape and np.array_equal(turned, cut) == (k == 0)
        assert np.array_equal(np.sort(turned, axis=None), np.sort(cut, axis=None))  # the same pixels, moved
        assert len({ds.symmetry(cut[-1:], j).tobytes() for j in range(8)}) == 8
