"""The user's own images as a data set: image folders, .npz/.npy arrays and IDX files, read, cached and checked.

The real images: a slice of Fashion-MNIST written out as a PNG folder tree (it must give the very metrics the
built-in loader gives on the same images) and scikit-learn's 8x8 handwritten digits. Every bad data set must
give one line naming the file and the fix, exit code 2 through the command line, and leave no cache behind.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from aelab.cli import main
from aelab.config import resolve
from aelab.data import DATASETS, DataBundle, Split, load_dataset, load_raw, own
from aelab.errors import DataError
from aelab.evaluation import evaluate_test, fit_pca
from aelab.experiments.jobs import train_job
from aelab.runs import Run

CLASSES = DATASETS["fashion-mnist"].classes
N_TRAIN, N_TEST = 300, 100
NO_CACHE = shutil.ignore_patterns(own.CACHE_FOLDER)  # copies start without the decoded cache


def folder_name(k: int) -> str:
    """Class folders sort in the built-in order: '0-T-shirt-top', '1-Trouser', ... ('/' cannot be in a name)."""
    return f"{k}-{CLASSES[k].replace('/', '-')}"


@pytest.fixture(scope="module")
def fashion_slice(data_root: Path) -> dict[str, np.ndarray]:
    """300 training and 100 test images of Fashion-MNIST (a seeded slice), in class-then-index order."""
    (train_x, train_y, test_x, test_y), _ = load_raw("fashion-mnist")
    rng = np.random.default_rng(7)
    tr = rng.choice(len(train_y), N_TRAIN, replace=False)
    te = rng.choice(len(test_y), N_TEST, replace=False)
    tr, te = tr[np.lexsort((tr, train_y[tr]))], te[np.lexsort((te, test_y[te]))]
    return {"train_idx": tr, "test_idx": te, "train_x": train_x[tr], "train_y": train_y[tr], "test_x": test_x[te],
            "test_y": test_y[te]}


@pytest.fixture(scope="module")
def fashion_pngs(fashion_slice, tmp_path_factory) -> Path:
    """The slice as an ImageFolder tree: ROOT/<class>/<index>.png and ROOT/test/<class>/<index>.png."""
    root = tmp_path_factory.mktemp("own") / "fashion"
    for split, sub in (("train", root), ("test", root / "test")):
        for i, x, y in zip(fashion_slice[f"{split}_idx"], fashion_slice[f"{split}_x"], fashion_slice[f"{split}_y"],
                           strict=True):
            path = sub / folder_name(int(y)) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(path)
    return root


def digits_npz(path: Path, **extra: np.ndarray) -> Path:
    d = load_digits()
    arrays = {"x": (d.images / 16.0).astype(np.float32), "y": d.target,
              "classes": np.array([str(k) for k in range(10)])} | extra
    np.savez(path, **arrays)
    return path


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line(result: object, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# ------------------------------------------------------------------------------------------ image folders
def test_a_png_tree_of_fashion_mnist_gives_the_built_in_metrics(fashion_slice, fashion_pngs, tmp_path):
    """Train on the PNG tree through the normal job, then evaluate that model on the very same images loaded by
    the built-in IDX loader: every metric, overall and per class, autoencoder and PCA, is the same."""
    cfg = resolve(overrides=dict(dataset=f"folder:{fashion_pngs}", model="dense", width=0.25, latent=8, epochs=1,
                                 val_fraction=0.0, patience=0, threads=1, report=False))
    run, metrics = train_job(cfg, out=tmp_path / "run", progress=False)
    builtin = DataBundle(name="fashion-mnist", classes=CLASSES, source="built-in",
                         train=Split(torch.from_numpy(fashion_slice["train_x"]),
                                     torch.from_numpy(fashion_slice["train_y"].astype(np.int64))),
                         val=Split(torch.empty(0, 28, 28, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)),
                         test=Split(torch.from_numpy(fashion_slice["test_x"]),
                                    torch.from_numpy(fashion_slice["test_y"].astype(np.int64))))
    again, _ = evaluate_test(run.load_model(), builtin, fit_pca(builtin, 8), seed=cfg.seed)
    for part in ("autoencoder", "pca"):
        assert metrics[part]["overall"] == pytest.approx(again[part]["overall"], rel=1e-6, abs=1e-9)
        mine = list(metrics[part]["per_class"].values())
        theirs = list(again[part]["per_class"].values())
        assert [r["n"] for r in mine] == [r["n"] for r in theirs] and len(mine) == 10
        for a, b in zip(mine, theirs, strict=True):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-9)
    assert list(metrics["autoencoder"]["per_class"])[1] == "1-Trouser"
    record = Run(run.path).load_data()
    assert record["shape"] == [1, 28, 28] and record["source"] == str(fashion_pngs)
    assert len(record["fingerprint"]["content"]) == 64 and record["images"] == {"train": 300, "val": 0, "test": 100}


def test_the_decoded_cache_is_reused_and_rebuilt_when_a_file_changes(fashion_pngs, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(fashion_pngs, root, ignore=NO_CACHE)
    first = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    cached = list((root / own.CACHE_FOLDER).iterdir())
    assert [p.name for p in cached] == ["own-auto.npz"] and "cached in" in first.notes[-1]
    second = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert "from the cache" in second.notes[0]
    assert torch.equal(first.train.images, second.train.images) and first.fingerprint == second.fingerprint
    victim = sorted((root / folder_name(3)).iterdir())[0]
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(victim)  # new pixels: new size and time
    third = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert "decoded" in third.notes[0]
    assert third.fingerprint["content"] != first.fingerprint["content"]
    assert not torch.equal(first.train.images, third.train.images)
    assert not [p for p in (root / own.CACHE_FOLDER).iterdir() if p.name != "own-auto.npz"]  # no temporary left


def test_a_cache_write_cut_short_leaves_no_cache_behind(fashion_pngs, tmp_path, monkeypatch):
    """Ctrl-C (or a crash) half-way through writing the cache: no cache file, no temporary file; the next load
    decodes again and writes a whole one."""
    root = tmp_path / "cut"
    shutil.copytree(fashion_pngs / "test", root, ignore=NO_CACHE)

    def half_then_interrupted(fh, **arrays):
        fh.write(b"PK\x03\x04 half of a zip")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(own.np, "savez", half_then_interrupted)
        with pytest.raises(KeyboardInterrupt):
            load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert list((root / own.CACHE_FOLDER).iterdir()) == []
    b = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert [p.name for p in (root / own.CACHE_FOLDER).iterdir()] == ["own-auto.npz"] and "decoded" in b.notes[0]


def test_a_folder_that_cannot_hold_the_cache_keeps_it_in_the_user_cache(fashion_pngs, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "blocked"
    shutil.copytree(fashion_pngs / "test", root, ignore=NO_CACHE)
    (root / own.CACHE_FOLDER).write_text("a file where the cache folder would go")  # as a read-only folder would
    b = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    kept = list((tmp_path / "cache" / "aelab" / "own").rglob("*.npz"))
    assert len(kept) == 1 and f"cached in {kept[0]}" in b.notes
    assert "from the cache" in load_dataset(f"folder:{root}", val_fraction=0.0, progress=False).notes[0]


def test_image_size_resizes_keeping_the_aspect_by_cropping_and_channels_convert(tmp_path):
    root = tmp_path / "sizes"
    (root / "a").mkdir(parents=True)
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = (255, 0, 0)  # a red centre square, black at the sides that the crop removes
    Image.fromarray(wide).save(root / "a" / "wide.png")
    Image.fromarray(np.full((30, 30), 128, np.uint8)).save(root / "a" / "grey.jpg")
    b = load_dataset(f"folder:{root}", val_fraction=0.0, image_size=10, test_fraction=0.5, progress=False)
    assert b.shape == (3, 10, 10)  # one colour image makes the set RGB
    both = torch.cat([b.train.images, b.test.images])
    red = next(im for im in both if im[1].float().mean() < 64)
    assert red[0].float().mean() > 240 and red[1:].float().max() < 16  # all red: the sides were cropped, not padded
    grey = load_dataset(f"folder:{root}", val_fraction=0.0, image_size=10, channels=1, test_fraction=0.5,
                        progress=False)
    assert grey.shape == (1, 10, 10) and grey.train.images.dim() == 3


@pytest.mark.parametrize("case, words", [
    ("unreadable", ["broken.png", "not an image", "replace the file or remove it"]),
    ("truncated", ["cut.png", "not a readable image", "truncated"]),
    ("mixed", ["big.png", "30x30", "--image-size"]),
    ("empty", ["Sandal", "empty class folder"]),
])
def test_bad_image_folders_are_one_line_and_leave_no_cache(case, words, fashion_pngs, tmp_path):
    root = tmp_path / case
    shutil.copytree(fashion_pngs / "test", root, ignore=NO_CACHE)
    some = root / folder_name(0)
    if case == "unreadable":
        (some / "broken.png").write_bytes(b"this is not a PNG file")
    elif case == "truncated":
        noise = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
        Image.fromarray(noise).save(some / "cut.png")
        data = (some / "cut.png").read_bytes()
        (some / "cut.png").write_bytes(data[: len(data) // 2])
    elif case == "mixed":
        Image.fromarray(np.zeros((30, 30), np.uint8)).save(some / "big.png")
    else:
        (root / "5-Sandal").mkdir(exist_ok=True)
        for f in (root / "5-Sandal").iterdir():
            f.unlink()
    res = cli("train", "--dataset", f"folder:{root}", "--out", tmp_path / "run", "--epochs", "1", "-q")
    assert_one_line(res, *words)
    assert not (tmp_path / "run").exists()
    assert not (root / own.CACHE_FOLDER).exists() or not any((root / own.CACHE_FOLDER).iterdir())


def test_a_data_set_larger_than_memory_is_refused_naming_its_size(fashion_pngs, tmp_path, monkeypatch):
    monkeypatch.setattr(own, "available_memory", lambda: 50_000)
    res = cli("train", "--dataset", f"folder:{fashion_pngs / 'test'}", "--out", tmp_path / "run", "-q")
    assert_one_line(res, "100 images of 28x28 grey need 78.4 kB", "the 50.0 kB available", "--image-size")
    assert not (fashion_pngs / "test" / own.CACHE_FOLDER).exists()
    npz = digits_npz(tmp_path / "digits.npz")
    # float32 as stored, its float working copy, the uint8 result and its copy, and the labels
    with pytest.raises(DataError, match=r"digits.npz: 1,797 images need 1.2 MB of memory to be read and converted"):
        load_dataset(f"npz:{npz}", progress=False)


# ------------------------------------------------------------------------------------------ array files
def test_digits_npz_loads_at_8x8_with_a_seeded_test_split(tmp_path):
    b = load_dataset(f"npz:{digits_npz(tmp_path / 'digits.npz')}", val_fraction=0.1, progress=False)
    assert b.shape == (1, 8, 8) and b.classes == tuple(str(k) for k in range(10))
    assert len(b.train) + len(b.val) + len(b.test) == 1797 and len(b.test) == 359  # 20% held out
    again = load_dataset(f"npz:{tmp_path / 'digits.npz'}", val_fraction=0.1, seed=5, progress=False)
    assert torch.equal(b.test.images, again.test.images)  # the test split does not move with --seed
    d = load_digits()
    flat = {bytes(np.rint(im / 16.0 * 255).astype(np.uint8).tobytes()) for im in d.images}
    assert all(bytes(im.numpy().tobytes()) in flat for im in b.test.images[:20])


def test_npy_nhwc_npz_test_arrays_and_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "c.npy", colour)
    b = load_dataset(f"npy:{tmp_path / 'c.npy'}", val_fraction=0.0, test_fraction=0.25, progress=False)
    assert b.shape == (3, 6, 5) and len(b.test) == 3 and b.classes == ("all",)
    np.savez(tmp_path / "t.npz", x=colour[:8].transpose(0, 3, 1, 2), y=np.array(list("abab" * 2)),
             x_test=colour[8:].transpose(0, 3, 1, 2), y_test=np.array(list("baba")))
    t = load_dataset(f"npz:{tmp_path / 't.npz'}", val_fraction=0.0, progress=False)
    assert t.classes == ("a", "b") and t.test.labels.tolist() == [1, 0, 1, 0]
    assert torch.equal(t.test.images, torch.from_numpy(colour[8:].transpose(0, 3, 1, 2).copy()))
    kmnist = tmp_path / "kmnist"
    kmnist.mkdir()
    x, y = rng.integers(0, 256, (20, 14, 10), dtype=np.uint8), (np.arange(20) % 4).astype(np.uint8)
    for stem, arr in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                      ("t10k-images-idx3-ubyte", x[:5]), ("t10k-labels-idx1-ubyte", y[:5])):
        head = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (kmnist / f"{stem}.gz").write_bytes(gzip.compress(head + arr.tobytes()))
    k = load_dataset(f"idx:{kmnist}", val_fraction=0.0, progress=False)
    assert k.shape == (1, 14, 10) and len(k.train) == 20 and len(k.test) == 5 and k.classes == ("0", "1", "2", "3")
    for f in kmnist.iterdir():
        f.rename(tmp_path / f"kmnist-{f.name}")
    kmnist.rmdir()
    assert torch.equal(load_dataset(f"idx:{tmp_path / 'kmnist'}", val_fraction=0.0, progress=False).test.images,
                       k.test.images)  # idx:PREFIX as the start of the file names works the same


@pytest.mark.parametrize("arrays, words", [
    (dict(x=np.zeros((10, 64), np.uint8)), ["rank 2", "(N, H, W)", "x.reshape(-1, 8, 8)"]),
    (dict(x=np.zeros((10, 8, 8), np.uint8), y=np.zeros(9, np.int64)), ["9 labels", "10 images", "one label per image"]),
    (dict(x=np.full((10, 8, 8), 200.0, np.float32)), ["floats from 200 to 200", "divide by 255"]),
    (dict(images=np.zeros((10, 8, 8), np.uint8)), ["no array 'x'", "images"]),
    (dict(x=np.zeros((12, 8, 8), np.uint8)), ["10 training and 2 test images", "at least 10 and 11",
                                               "--test-fraction"]),  # too few for kNN-5 and trustworthiness
])
def test_bad_arrays_are_one_line_naming_the_file_and_the_fix(arrays, words, tmp_path):
    np.savez(tmp_path / "bad.npz", **arrays)
    res = cli("train", "--dataset", f"npz:{tmp_path / 'bad.npz'}", "--out", tmp_path / "run", "-q")
    assert_one_line(res, "bad.npz", *words)
    assert not (tmp_path / "run").exists()
