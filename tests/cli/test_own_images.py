"""Your own images end to end through the command line: every command on a run of a user's data set.

Two real data sets that ship with the test dependencies: scikit-learn's 1,797 handwritten digits (8x8 grey) as
an .npz, and crops of scikit-learn's two sample photographs (colour, of mixed sizes, PNG and JPEG) as an image
folder with a test/ sub-folder. Tiny budgets: the point is that each command works and is right on such a run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images
from starlette.testclient import TestClient

import aelab
from aelab.cli import main
from aelab.data import load_dataset
from aelab.explorer import create_app

# fp32 pinned: with --precision auto a CPU where bf16 pays (AMX Xeon, Zen 4 EPYC) trains these tiny runs in bf16,
# which lands the 20-epoch digits run at SSIM 0.79 instead of above 0.8: the bar would test the machine.
TINY = ("--threads", "1", "--batch-size", "64", "--precision", "fp32", "-q")


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(result: object) -> object:
    assert result.exit_code == 0, result.output
    return result


def png(source: Path | bytes) -> np.ndarray:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = load_digits()
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x=(d.images / 16.0).astype(np.float32), y=d.target, classes=np.array([str(k) for k in range(10)]))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops of the two sample photographs: one class each, 40 training and 10 test crops of 36-60 pixels a side,
    PNG and JPEG."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    rng = np.random.default_rng(0)
    for name, image in zip(("china", "flower"), load_sample_images().images, strict=True):
        for split, count in (("train", 40), ("test", 10)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(36, 61, 2)
                top, left = rng.integers(0, image.shape[0] - h), rng.integers(0, image.shape[1] - w)
                suffix = ".jpg" if i % 3 == 0 else ".png"
                Image.fromarray(image[top:top + h, left:left + w]).save(folder / f"{i:03d}{suffix}")
    return root


def test_digits_npz_through_every_command(digits, tmp_path):
    run = tmp_path / "digits"
    res = ok(cli("train", "--dataset", f"npz:{digits}", "--model", "conv", "--latent", "8", "--width", "0.5",
                 "--epochs", "20", "--no-report", "--out", run, *TINY))
    assert "test SSIM" in res.output and "(PCA " in res.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"]["shape"] == [1, 8, 8] and m["split"]["test"] == 359
    assert list(m["autoencoder"]["per_class"]) == [str(k) for k in range(10)]
    assert "8x8 images: windows cut" in m["ssim_definition"]
    ae, pca = m["autoencoder"]["overall"], m["pca"]["overall"]
    assert 0.8 < ae["ssim"] < 1 and 0.8 < pca["ssim"] < 1 and ae["knn5"] > 0.8  # 20 short epochs learn the digits
    record = json.loads((run / "data.json").read_text())
    assert record["dataset"] == f"npz:{digits}" and record["shape"] == [1, 8, 8]

    again = ok(cli("evaluate", run))
    assert f"{ae['ssim']:.4f}" in again.output and "warning" not in again.stderr
    ok(cli("report", run))
    assert (run / "report.html").stat().st_size > 10_000 and (run / "figures" / "manifold.png").is_file()

    model = aelab.load(run)
    assert model.image_shape == (1, 8, 8) and model.classes == tuple(str(k) for k in range(10))
    ok(cli("encode", run, "data:test", "-o", tmp_path / "codes.npy"))
    test = load_dataset(f"npz:{digits}", progress=False).test
    codes = np.load(tmp_path / "codes.npy")
    np.testing.assert_allclose(codes, model.encode(test.images.numpy()), atol=1e-5)
    ok(cli("encode", run, digits, "-o", tmp_path / "all.npy"))
    assert np.load(tmp_path / "all.npy").shape == (1797, 8)  # the whole .npz as an input file
    ok(cli("decode", run, tmp_path / "codes.npy", "-o", tmp_path / "decoded", "--limit", "5"))
    assert [png(p).shape for p in sorted((tmp_path / "decoded").glob("*.png"))] == [(8, 8)] * 5
    ok(cli("reconstruct", run, "data:test", "-o", tmp_path / "pairs", "--limit", "5"))
    assert png(next((tmp_path / "pairs").glob("00000_*.png"))).shape == (8, 17)
    ok(cli("export", run, "--format", "torchscript"))
    assert "(batch, 1, 8, 8)" in json.loads((run / "export" / "export.json").read_text())["encoder"]["input"]
    ok(cli("compare", run, "--out", tmp_path / "cmp"))
    assert (tmp_path / "cmp" / "comparison.md").is_file()
    ok(cli("score", run, "data:test", "-o", tmp_path / "scores.csv"))  # the anomaly score of the run's own split
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 1 + 359  # the 359 test digits
    ok(cli("denoise", run, "data:test", "-o", tmp_path / "den", "--limit", "3"))
    assert png(tmp_path / "den" / "00000.png").shape == (8, 17)

    d = load_digits()  # the data change after training: evaluate says so
    np.savez(digits, x=(d.images[::-1] / 16.0).astype(np.float32), y=d.target[::-1],
             classes=np.array([str(k) for k in range(10)]))
    changed = ok(cli("evaluate", run))
    assert "warning: the data of" in changed.stderr and "changed since training" in changed.stderr


def test_tune_searches_on_an_own_data_set(digits, tmp_path):
    res = ok(cli("tune", "--dataset", f"npz:{digits}", "--model", "conv", "--latent", "4", "--trials", "2",
                 "--trial-epochs", "1", "--pruner", "none", "--no-retrain", "--out", tmp_path / "tune", *TINY))
    assert "trial" in res.output
    assert len((tmp_path / "tune" / "trials.csv").read_text().strip().splitlines()) == 3


def test_colour_photographs_through_every_command(photos, tmp_path):
    run = tmp_path / "colour"
    res = ok(cli("train", "--dataset", f"folder:{photos}", "--image-size", "30", "--latent", "8", "--width", "0.25",
                 "--epochs", "2", "--out", run, *TINY))
    assert "conv-modified pads 30x30 images with zeros to 32x32" in res.stderr  # halves twice: said, not hidden
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"]["shape"] == [3, 30, 30] and m["split"]["test"] == 20
    assert set(m["autoencoder"]["per_class"]) == {"china", "flower"}
    assert "colour: SSIM of each of the 3 channels" in m["ssim_definition"]
    assert 0 < m["autoencoder"]["overall"]["ssim"] < 1 and (run / "report.html").is_file()
    assert (photos / ".aelab-cache" / "s30-auto.npz").is_file()

    ok(cli("reconstruct", run, "data:test", "-o", tmp_path / "pairs"))
    pair = png(next((tmp_path / "pairs").glob("00000_*.png")))
    assert pair.shape == (30, 61, 3) and pair[:, :30].std() > 5  # RGB: original | reconstruction
    ok(cli("reconstruct", run, photos / "test" / "china", "-o", tmp_path / "raw", "--resize", "--limit", "3"))
    ok(cli("encode", run, "data:test", "-o", tmp_path / "codes.npy"))
    ok(cli("decode", run, tmp_path / "codes.npy", "-o", tmp_path / "decoded", "--limit", "2"))
    assert png(next((tmp_path / "decoded").glob("*.png"))).shape == (30, 30, 3)

    with TestClient(create_app(run, threads=1), raise_server_exceptions=False) as client:
        r = client.get("/api/images/0", params={"kind": "input"})
        assert r.status_code == 200 and png(r.content).shape == (30, 30, 3)
        codes = np.load(tmp_path / "codes.npy")[:2]
        r = client.post("/api/decode", json={"codes": codes.tolist(), "format": "json"})
        assert r.status_code == 200 and np.array(r.json()["images"]).shape == (2, 30, 30, 3)
        upload = (photos / "test" / "flower" / "000.jpg").read_bytes()
        r = client.post("/api/encode", content=upload, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200 and len(r.json()["code"]) == 8


def test_a_vae_on_colour_images_samples_in_colour(photos, tmp_path):
    run = tmp_path / "vae"
    res = ok(cli("train", "--dataset", f"folder:{photos}", "--image-size", "32", "--model", "vae", "--latent", "4",
                 "--width", "0.25", "--epochs", "1", "--out", run, *TINY))
    samples = png(run / "figures" / "prior_samples.png")  # the report's VAE figures, in colour
    assert samples.ndim == 3 and samples.shape[2] in (3, 4) and "VAE figures" not in res.stderr
    assert (samples[..., 0] != samples[..., 1]).any()  # not grey
    ok(cli("sample", run, "-n", "4", "-o", tmp_path / "grid.png"))
    assert png(tmp_path / "grid.png").shape == (2 * 33 - 1, 2 * 33 - 1, 3)



def test_one_class_anomaly_detection_on_an_own_data_set(digits, tmp_path):
    res = ok(cli("anomaly", "--dataset", f"npz:{digits}", "--normal", "0", "--model", "dense", "--latent", "4",
                 "--epochs", "1", "--out", tmp_path / "an", *TINY))
    assert (tmp_path / "an" / "anomaly.md").is_file() and "baseline: PCA" in res.output
