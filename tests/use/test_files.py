"""aelab encode / decode / reconstruct on real inputs: data set splits, IDX files, .npy arrays, PNG folders.

Every bad input must give one line naming the file and the problem, exit code 2, and no output file.
"""

from __future__ import annotations

import csv
import gzip
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import aelab
from aelab.cli import main
from aelab.data import load_raw, open_input
from aelab.files import OUTPUT_LIST
from aelab.models import build_model
from aelab.use.api import TrainedModel
from aelab.use.files import encode_to_file
from tests.conftest import aelab_exe


@pytest.fixture(scope="module")
def model(run_path: Path) -> TrainedModel:
    return aelab.load(run_path)


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    (_, _, x, y), _ = load_raw("fashion-mnist")
    return x, y


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result: object, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def codes_of(rows: list[dict[str, str]]) -> np.ndarray:
    zs = [k for k in rows[0] if k.startswith("z")]
    return np.array([[float(r[z]) for z in zs] for r in rows], dtype=np.float32)


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# ------------------------------------------------------------------------------------------ encode
def test_encode_split_to_npy_with_sidecar(run_path, model, test_set, tmp_path):
    x, y = test_set
    out = tmp_path / "codes.npy"
    r = cli("encode", run_path, "fashion-mnist:test", "-o", out, "--limit", 200, "-q")
    assert r.exit_code == 0, r.output
    codes = np.load(out)
    assert codes.shape == (200, 16) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, model.encode(x[:200]), atol=1e-5)
    side = read_csv(tmp_path / "codes.index.csv")
    assert [int(row["label"]) for row in side] == y[:200].tolist()
    assert side[0]["class"] == "Ankle boot"  # the first test image is an ankle boot (label 9)


def test_encode_csv_and_parquet_carry_labels(run_path, model, test_set, tmp_path):
    import pyarrow.parquet as pq

    x, y = test_set
    want = model.encode(x[:150])
    assert cli("encode", run_path, "fashion-mnist:test", "-o", tmp_path / "c.csv", "--limit", 150, "-q").exit_code == 0
    rows = read_csv(tmp_path / "c.csv")
    assert list(rows[0])[:3] == ["label", "class", "z0"] and len(rows) == 150
    np.testing.assert_allclose(codes_of(rows), want, atol=1e-6)
    assert [int(r["label"]) for r in rows] == y[:150].tolist()
    assert cli("encode", run_path, "fashion-mnist:test", "-o", tmp_path / "c.parquet", "--limit", 150,
               "-q").exit_code == 0
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.column("label").to_pylist() == y[:150].tolist()
    np.testing.assert_allclose(np.stack([table.column(f"z{j}").to_numpy() for j in range(16)], 1), want, atol=1e-6)


def test_encode_idx_files_gzip_and_raw_with_labels(run_path, model, test_set, data_root, tmp_path):
    x, y = test_set
    gz = data_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    assert cli("encode", run_path, gz, "-o", tmp_path / "gz.csv", "--limit", 120, "-q").exit_code == 0
    rows = read_csv(tmp_path / "gz.csv")
    assert [int(r["label"]) for r in rows] == y[:120].tolist()  # from the labels file beside it
    np.testing.assert_allclose(codes_of(rows), model.encode(x[:120]), atol=1e-6)
    # a raw (uncompressed) IDX pair, memory-mapped
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "my-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, 90, 28, 28) + x[200:290].tobytes())
    (raw / "my-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 90) + y[200:290].tobytes())
    assert cli("encode", run_path, raw / "my-images-idx3-ubyte", "-o", tmp_path / "raw.npy", "-q").exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "raw.npy"), model.encode(x[200:290]), atol=1e-5)
    assert [int(r["label"]) for r in read_csv(tmp_path / "raw.index.csv")] == y[200:290].tolist()


def test_encode_png_folder_grey_rgb_and_names(run_path, model, test_set, tmp_path):
    x, _ = test_set
    folder = tmp_path / "pngs"
    for i in range(5):
        save_png(folder / f"item{i}.png", x[i])
    save_png(folder / "colour.png", np.repeat(x[5][:, :, None], 3, axis=2))  # RGB, converted to grey
    (folder / "notes.txt").write_text("not an image, and not a .png: ignored")
    r = cli("encode", run_path, folder, "-o", tmp_path / "f.csv", "-q")
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "f.csv")
    assert [row["name"] for row in rows] == ["colour.png"] + [f"item{i}.png" for i in range(5)]  # sorted
    want = model.encode(np.stack([x[5], *x[:5]]))
    np.testing.assert_allclose(codes_of(rows), want, atol=1e-6)


def test_class_subfolders_give_labels(run_path, test_set, tmp_path):
    x, _ = test_set
    for cls, idx in (("boots", [0, 1]), ("shirts", [2])):
        for i in idx:
            save_png(tmp_path / "data" / cls / f"{i}.png", x[i])
    assert cli("encode", run_path, tmp_path / "data", "-o", tmp_path / "c.csv", "-q").exit_code == 0
    rows = read_csv(tmp_path / "c.csv")
    assert [(r["name"], r["label"], r["class"]) for r in rows] == [
        ("boots/0.png", "0", "boots"), ("boots/1.png", "0", "boots"), ("shirts/2.png", "1", "shirts")]


def test_resize_only_when_asked(run_path, model, test_set, tmp_path):
    x, _ = test_set
    big = np.asarray(Image.fromarray(x[0]).resize((56, 56), Image.Resampling.NEAREST))
    save_png(tmp_path / "in" / "big.png", big)
    save_png(tmp_path / "in" / "ok.png", x[1])
    out = tmp_path / "c.npy"
    assert_user_error(cli("encode", run_path, tmp_path / "in", "-o", out), "big.png", "56x56", "--resize")
    assert not out.exists()
    r = cli("encode", run_path, tmp_path / "in", "-o", out, "--resize", "-q")
    assert r.exit_code == 0 and "warning: " in r.stderr and "resized" in r.stderr
    resized = np.asarray(Image.fromarray(big).resize((28, 28), Image.Resampling.LANCZOS))
    np.testing.assert_allclose(np.load(out), model.encode(np.stack([resized, x[1]])), atol=1e-5)


# ------------------------------------------------------------------------------------------ bad input
def _no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_bad_inputs_one_line_exit_2_nothing_written(run_path, test_set, tmp_path):
    x, _ = test_set
    out = tmp_path / "out"
    out.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = tmp_path / "fake"
    fake.mkdir()
    save_png(fake / "a.png", x[0])
    (fake / "b.png").write_text("this is text, not a PNG")
    np.save(tmp_path / "wrong_shape.npy", np.zeros((4, 32, 32), np.uint8))
    nan_codes = np.zeros((5, 16), np.float32)
    nan_codes[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan_codes)
    np.save(tmp_path / "narrow.npy", np.zeros((5, 7), np.float32))
    nan_pixels = np.zeros((3000, 784), np.float32)
    nan_pixels[2500, 10] = np.nan  # found in the third batch, after two batches were written
    np.save(tmp_path / "nan_pixels.npy", nan_pixels)
    cases = [
        (("encode", run_path, empty, "-o", out / "c.npy"), ("empty", "no images")),
        (("encode", run_path, fake, "-o", out / "c.npy"), ("b.png", "not an image")),
        (("encode", run_path, tmp_path / "wrong_shape.npy", "-o", out / "c.npy"), ("wrong_shape.npy", "(4, 32, 32)")),
        (("encode", run_path, tmp_path / "nan_pixels.npy", "-o", out / "c.npy"), ("nan_pixels.npy", "image 2500",
                                                                                   "NaN")),
        (("encode", run_path, tmp_path / "missing.npy", "-o", out / "c.npy"), ("missing.npy", "no such file")),
        (("encode", run_path, "fashion-mnist:val", "-o", out / "c.npy"), ("unknown split",)),
        (("encode", run_path, "fashion-mnist:test", "-o", out / "c.txt"), ("c.txt", "unknown output format")),
        (("encode", tmp_path / "norun", "fashion-mnist:test", "-o", out / "c.npy"), ("norun", "does not exist")),
        (("decode", run_path, tmp_path / "nan.npy", "-o", out / "png"), ("nan.npy", "row 3", "NaN")),
        (("decode", run_path, tmp_path / "narrow.npy", "-o", out / "png"), ("narrow.npy", "width 7",
                                                                             "latent size is 16")),
        (("reconstruct", run_path, fake, "-o", out / "rec"), ("b.png", "not an image")),
    ]
    for args, words in cases:
        assert_user_error(cli(*args), *words)
        assert list(out.iterdir()) == [], (args, list(out.iterdir()))
    assert _no_leftovers(tmp_path) == []


def test_console_script_bad_input_has_no_traceback(run_path, tmp_path):
    np.save(tmp_path / "narrow.npy", np.zeros((5, 7), np.float32))
    p = subprocess.run([aelab_exe(), "decode", str(run_path), str(tmp_path / "narrow.npy"), "-o",
                        str(tmp_path / "png")], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: {tmp_path / 'narrow.npy'} have width 7, but the model's latent "
                                             f"size is 16"]
    assert not (tmp_path / "png").exists()


# ------------------------------------------------------------------------------------------ decode / reconstruct
def test_decode_writes_the_decoded_pngs(run_path, model, test_set, tmp_path):
    x, _ = test_set
    codes = model.encode(x[:12])
    np.save(tmp_path / "codes.npy", codes)
    r = cli("decode", run_path, tmp_path / "codes.npy", "-o", tmp_path / "png", "-q")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "png").glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(12)]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [OUTPUT_LIST] + [f.name for f in files]
    want = np.clip(np.rint(model.decode(codes) * 255), 0, 255).astype(np.uint8)
    got = np.stack([np.asarray(Image.open(f)) for f in files])
    np.testing.assert_array_equal(got, want)
    # the folder is not replaced without --force; with it, what aelab wrote there is
    assert_user_error(cli("decode", run_path, tmp_path / "codes.npy", "-o", tmp_path / "png"), "--force")
    r = cli("decode", run_path, tmp_path / "codes.npy", "-o", tmp_path / "png", "--limit", 3, "--force",
            "--scale", 2, "-q")
    assert r.exit_code == 0 and len(list((tmp_path / "png").glob("*.png"))) == 3
    assert Image.open(tmp_path / "png" / "00000.png").size == (56, 56)


def test_decode_names_from_a_csv_of_a_folder(run_path, test_set, tmp_path):
    x, _ = test_set
    for name in ("shoe", "bag"):
        save_png(tmp_path / "in" / f"{name}.png", x[0])
    cli("encode", run_path, tmp_path / "in", "-o", tmp_path / "c.csv", "-q")
    assert cli("decode", run_path, tmp_path / "c.csv", "-o", tmp_path / "out", "-q").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["00000_bag.png", "00001_shoe.png"]


def test_reconstruct_writes_pairs_with_their_ssim(run_path, model, test_set, tmp_path):
    from aelab.evaluation.metrics import ssim_per_image

    x, y = test_set
    r = cli("reconstruct", run_path, "fashion-mnist:test", "-o", tmp_path / "rec", "--limit", 40, "-q")
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "rec" / "index.csv")
    assert len(rows) == 40 and [int(row["label"]) for row in rows] == y[:40].tolist()
    target = torch.from_numpy(x[:40] / 255.0).unsqueeze(1)
    want = ssim_per_image(torch.from_numpy(model.reconstruct(x[:40])).double().unsqueeze(1), target).numpy()
    np.testing.assert_allclose([float(row["ssim"]) for row in rows], want, atol=1e-5)
    assert f"mean SSIM {want.mean():.4f}" in r.stdout
    pair = np.asarray(Image.open(tmp_path / "rec" / rows[7]["file"]))
    assert rows[7]["file"].endswith(f"_ssim{want[7]:.4f}.png") and pair.shape == (28, 57)
    np.testing.assert_array_equal(pair[:, :28], x[7])  # left: the original
    np.testing.assert_array_equal(pair[:, 29:], np.clip(np.rint(model.reconstruct(x[7:8])[0] * 255), 0, 255))


# ------------------------------------------------------------------------------------------ streaming
def big_npy(x: np.ndarray, path: Path, n: int) -> Path:
    """A .npy of ``n`` images, the 10,000 test images repeated, written through a memory map (never whole)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    for start in range(0, n, len(x)):
        arr[start:start + len(x)] = x[:n - start]
    arr.flush()
    del arr
    return path


def test_large_npy_streams_in_batches_with_bounded_memory(test_set, tmp_path):
    """A memory-mapped .npy of 100,000 images (78 MB) encodes without ever holding it: peak traced memory stays
    far below the file's size, and the file is read in slices of at most one batch."""
    x, _ = test_set
    n = 100_000
    path = big_npy(x, tmp_path / "big.npy", n)
    torch.manual_seed(0)
    small = TrainedModel(build_model("dense", 4, width=0.05))  # a real model; its weights do not matter here
    tracemalloc.start()
    try:
        src = open_input(path)
        reads: list[int] = []
        real_read = src.read

        def counting_read(a: int, b: int) -> np.ndarray:
            reads.append(b - a)
            return real_read(a, b)

        src.read = counting_read
        encode_to_file(small, src, tmp_path / "codes.npy", batch_size=2048, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert peak < size / 5, (peak, size)  # the whole file never sits in memory
    assert max(reads) == 2048 and sum(reads) == n and len(reads) == -(-n // 2048)
    codes = np.load(tmp_path / "codes.npy", mmap_mode="r")
    assert codes.shape == (n, 4)
    for i in (0, 12_345, n - 1):
        np.testing.assert_allclose(codes[i], small.encode(x[i % 10_000][None])[0], atol=1e-6)


def test_gzip_idx_is_read_in_order_without_loading_it_whole(data_root, tmp_path):
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    shutil.copy(data_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", gz)
    src = open_input(gz)
    assert src.labels is None and src.n == 10_000  # no labels file beside this copy
    with gzip.open(gz) as fh:
        want = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    got = np.concatenate([b for _, b in src.batches(3000)])
    np.testing.assert_array_equal(got, want)


def test_large_npy_keeps_resident_memory_bounded(test_set, tmp_path):
    """In a fresh process, encoding a 78 MB .npy raises the peak resident memory (VmHWM, Linux) by far less
    than the file's size: neither the input nor the output is held or mapped whole."""
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to read the peak resident memory")
    x, _ = test_set
    n = 100_000
    path = big_npy(x, tmp_path / "big.npy", n)
    np.save(tmp_path / "small.npy", x[:3000])
    code = f"""
import numpy as np, torch
from aelab.use.api import TrainedModel
from aelab.models import build_model
from aelab.use.files import encode_to_file
def hwm():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]) * 1024
model = TrainedModel(build_model('dense', 64, width=0.05))
encode_to_file(model, {str(tmp_path / 'small.npy')!r}, {str(tmp_path / 'c.npy')!r}, batch_size=1024, progress=False)
before = hwm()
encode_to_file(model, {str(path)!r}, {str(tmp_path / 'codes2.npy')!r}, batch_size=1024, progress=False)
print(before, hwm())
"""
    # the warm-up pass on a small file sets the libraries up, so the difference is the big file's own
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    before, after = map(int, p.stdout.split())
    assert after - before < path.stat().st_size / 4, (before, after)
    assert np.load(tmp_path / "codes2.npy", mmap_mode="r").shape == (n, 64)
