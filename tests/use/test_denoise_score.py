"""Scoring and denoising new images: ``aelab score`` on a folder and a .npy, ``aelab denoise``, and the same
from Python (``score_samples`` / ``predict`` on ``aelab.load`` and on the scikit-learn estimator)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aelab
from aelab import AutoencoderReducer
from aelab.cli.app import main
from aelab.data import load_dataset
from aelab.evaluation.detector import Detector
from aelab.experiments.anomaly import anomaly_job
from aelab.runs import Run

TROUSER, BAG = 1, 8


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def test_set(data_root):
    t = load_dataset("fashion-mnist").test
    return t.images.numpy(), t.labels.numpy()


@pytest.fixture(scope="module")
def trouser_run(tmp_path_factory, data_root):
    """A real one-class run (Trouser), trained as a denoiser (gaussian 0.3): it has a detector and denoises."""
    out = tmp_path_factory.mktemp("detect")
    res = anomaly_job("Trouser", out=out, progress=False, figures=False,
                      overrides=dict(model="dense", width=0.5, latent=8, epochs=3, train_limit=1500, threads=1,
                                     noise="gaussian:0.3"))
    return res.results[0]["folder"]


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory, test_set):
    """12 test images as PNGs: 6 trousers (normal) then 6 bags (anomalies)."""
    images, labels = test_set
    folder = tmp_path_factory.mktemp("pngs")
    picks = [*np.flatnonzero(labels == TROUSER)[:6], *np.flatnonzero(labels == BAG)[:6]]
    for j, i in enumerate(picks):
        Image.fromarray(images[i]).save(folder / f"{j:02d}_{'trouser' if labels[i] == TROUSER else 'bag'}.png")
    return folder


def test_score_a_folder_writes_one_row_per_image_with_its_flag(trouser_run, png_folder, tmp_path) -> None:
    out = tmp_path / "scores.csv"
    res = cli("score", trouser_run, png_folder, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == sorted(p.name for p in png_folder.iterdir())
    det = Detector.load(Run(Path(trouser_run)))
    scores = np.array([float(r["score"]) for r in rows])
    flags = np.array([int(r["anomaly"]) for r in rows])
    assert np.array_equal(flags, (scores > det.threshold).astype(int))
    assert scores[6:].mean() > scores[:6].mean()  # bags look less like trousers than trousers do
    assert flags[6:].sum() >= 4 and flags[:6].sum() <= 2
    assert f"{flags.sum()} flagged" in res.output
    # The same scores from Python.
    model = aelab.load(trouser_run)
    images = np.stack([np.asarray(Image.open(png_folder / r["name"])) for r in rows])
    assert model.anomaly_score(images) == pytest.approx(scores, rel=1e-4)
    assert np.array_equal(model.predict(images), np.where(flags == 1, -1, 1))
    assert model.score_samples(images) == pytest.approx(-scores, rel=1e-4)
    assert np.array_equal(model.decision_function(images) < 0, flags == 1)
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(again.predict(images), model.predict(images))


def test_score_threshold_option_and_npy_input(trouser_run, test_set, tmp_path) -> None:
    images, labels = test_set
    np.save(tmp_path / "x.npy", images[:200])
    out = tmp_path / "s.csv"
    res = cli("score", trouser_run, tmp_path / "x.npy", "-o", out, "--threshold", "-1e9", "-q")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 200 and all(r["anomaly"] == "1" for r in rows)


def test_a_run_without_detector_gets_its_threshold_from_its_validation_split(run_path, test_set, tmp_path) -> None:
    images, _ = test_set
    np.save(tmp_path / "x.npy", images[:300])
    out = tmp_path / "s.csv"
    res = cli("score", run_path, tmp_path / "x.npy", "-o", out, "--quantile", "0.9", "-q")
    assert res.exit_code == 0, res.output
    flagged = np.mean([r["anomaly"] == "1" for r in csv.DictReader(out.open())])
    assert 0.02 < flagged < 0.3  # test images are like its training images: about 10% above the 0.9 quantile
    model = aelab.load(run_path)
    with pytest.raises(aelab.errors.InputError, match="fit_detector"):
        model.predict(images[:5])
    model.fit_detector(images[:2000], quantile=0.9)
    assert 0.02 < np.mean(model.predict(images[2000:3000]) == -1) < 0.3


def test_denoise_writes_noisy_denoised_clean_triplets(trouser_run, png_folder, tmp_path) -> None:
    res = cli("denoise", trouser_run, png_folder, "-o", tmp_path / "d", "--add-noise", "gaussian:0.3", "-q")
    assert res.exit_code == 0, res.output
    assert "mean SSIM against the clean images" in res.output
    rows = list(csv.DictReader((tmp_path / "d" / "index.csv").open()))
    assert len(rows) == 12 and all(-1 <= float(r["ssim"]) <= 1 for r in rows)
    with Image.open(tmp_path / "d" / rows[0]["file"]) as im:
        assert im.size == (28 * 3 + 2, 28)
    trousers = np.mean([float(r["ssim"]) for r in rows[:6]])
    noisy = np.asarray(Image.open(tmp_path / "d" / rows[0]["file"]))[:, :28]
    assert trousers > 0.4 and noisy.std() > 0  # a trouser comes back cleaner than the noise left it
    res = cli("denoise", trouser_run, png_folder, "-o", tmp_path / "p", "-q")
    assert res.exit_code == 0, res.output
    with Image.open(next((tmp_path / "p").glob("*.png"))) as im:
        assert im.size == (28 * 2 + 1, 28)


def test_mistakes_are_one_line_errors(trouser_run, png_folder, tmp_path) -> None:
    for args, text in (
        (("score", tmp_path / "nope", png_folder, "-o", tmp_path / "s.csv"), "does not exist"),
        (("score", trouser_run, png_folder, "-o", tmp_path), "is a directory"),
        (("denoise", trouser_run, png_folder, "-o", tmp_path / "d", "--add-noise", "blur:3"), "unknown noise"),
        (("score", trouser_run, png_folder, "-o", tmp_path / "s.csv", "--score", "elbo"), "unknown score"),
    ):
        res = cli(*args)
        assert res.exit_code == 2 and text in res.output and "Traceback" not in res.output, res.output


def test_estimator_predicts_like_an_outlier_detector(test_set, data_root) -> None:
    images, labels = test_set
    train = load_dataset("fashion-mnist", classes=["Trouser"]).train.images.numpy()[:1500].reshape(-1, 784)
    est = AutoencoderReducer(n_components=8, model="dense", width=0.5, epochs=3, batch_size=64, random_state=0,
                             device="cpu", threads=1, contamination=0.05).fit(train)
    trousers, bags = images[labels == TROUSER][:300], images[labels == BAG][:300]
    assert set(np.unique(est.predict(bags))) <= {-1, 1}
    assert np.mean(est.predict(trousers) == 1) > 0.8 and np.mean(est.predict(bags) == -1) > 0.8
    assert est.score_samples(trousers).mean() > est.score_samples(bags).mean()
    assert np.array_equal(est.decision_function(bags) < 0, est.predict(bags) == -1)
