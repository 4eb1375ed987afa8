"""AutoencoderReducer: a scikit-learn transformer trained by aelab's Trainer, on real Fashion-MNIST slices.

scikit-learn's check_estimator runs with the documented skip list; the property behind each skipped check
(they fit on toy tabular data, not images) is tested here on real images, in the test the list names.
"""

from __future__ import annotations

import doctest
import pickle
import warnings

import numpy as np
import pytest
import torch
from joblib import hash as joblib_hash
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks

from aelab import AutoencoderReducer
from aelab.data import load_dataset
from aelab.evaluation.metrics import ssim_per_image
from aelab.use.estimator import SKIPPED_CHECKS

TINY = dict(n_components=8, model="dense", width=0.25, epochs=2, batch_size=64, random_state=0, device="cpu",
            threads=1)


@pytest.fixture(scope="module")
def data():
    """600 training and 300 test images, uint8 rows (n, 784), with labels."""
    b = load_dataset("fashion-mnist", train_limit=600, test_limit=300)
    return (b.train.images.numpy().reshape(-1, 784), b.train.labels.numpy(),
            b.test.images.numpy().reshape(-1, 784), b.test.labels.numpy())


@pytest.fixture(scope="module")
def fitted(data):
    return AutoencoderReducer(**TINY).fit(data[0])


def test_fit_transform_inverse_score(data, fitted):
    X, _, Xt, _ = data
    est = AutoencoderReducer(**TINY)
    assert est.fit(X) is est
    codes = fitted.transform(Xt)
    assert codes.shape == (300, 8) and codes.dtype == np.float32
    np.testing.assert_allclose(AutoencoderReducer(**TINY).fit_transform(X), fitted.transform(X), atol=1e-5)
    recon = fitted.inverse_transform(codes)
    assert recon.shape == (300, 784) and recon.dtype == np.float32 and 0 <= recon.min() and recon.max() <= 1
    # score is the mean headline SSIM of inverse_transform(transform(X)) against X
    x = torch.from_numpy(Xt.astype(np.float64) / 255.0).reshape(-1, 1, 28, 28)
    want = float(ssim_per_image(torch.from_numpy(recon).double().reshape(-1, 1, 28, 28), x).mean())
    assert fitted.score(Xt) == pytest.approx(want, abs=1e-4)
    assert fitted.score(Xt, np.zeros(300)) == pytest.approx(want, abs=1e-4)  # y is accepted and ignored
    assert fitted.n_features_in_ == 784 and fitted.n_iter_ == 2 and len(fitted.history_) == 2
    assert list(fitted.get_feature_names_out()[:2]) == ["autoencoderreducer0", "autoencoderreducer1"]


def test_training_improves_the_score(data, fitted):
    """More epochs of the same recipe reconstruct better: the Trainer really trains."""
    X, _, Xt, _ = data
    one = AutoencoderReducer(**{**TINY, "epochs": 1}).fit(X)
    five = AutoencoderReducer(**{**TINY, "epochs": 6}).fit(X)
    assert five.score(Xt) > one.score(Xt) + 0.02


def test_check_estimator_with_documented_skips():
    tiny = AutoencoderReducer(n_components=4, model="dense", width=0.05, epochs=1, batch_size=32, device="cpu",
                              threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = estimator_checks.check_estimator(tiny, expected_failed_checks=SKIPPED_CHECKS, on_fail=None)
    status: dict[str, set[str]] = {}
    for r in results:
        status.setdefault(r["check_name"], set()).add(r["status"])
    failed = [name for name, s in status.items() if "failed" in s]
    assert not failed, failed
    passed = [name for name, s in status.items() if s == {"passed"}]
    assert len(passed) >= 20
    # the skip list is not stale: every listed check is run and still does not apply
    assert {name for name, s in status.items() if "xfail" in s} == set(SKIPPED_CHECKS)
    for reason in SKIPPED_CHECKS.values():
        test_name = reason.rsplit(": ", 1)[1]
        assert test_name in globals(), test_name


def test_pipeline_with_logistic_regression(data):
    X, y, Xt, yt = data
    pipe = Pipeline([("reduce", AutoencoderReducer(**TINY)), ("clf", LogisticRegression(max_iter=300))])
    accuracy = pipe.fit(X, y).score(Xt, yt)
    assert accuracy > 0.45  # ten classes: chance is 0.1
    reducer, clf = pipe.named_steps["reduce"], pipe.named_steps["clf"]
    np.testing.assert_array_equal(pipe.predict(Xt), clf.predict(reducer.transform(Xt)))


def test_clone_and_set_params(fitted):
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "model_")
    c.set_params(n_components=3, epochs=1)
    assert c.get_params()["n_components"] == 3 and fitted.n_components == 8


def test_grid_search_uses_ssim_score(data):
    X = data[0][:300]
    search = GridSearchCV(AutoencoderReducer(**{**TINY, "epochs": 1}), {"n_components": [2, 16]}, cv=2)
    search.fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_ == {"n_components": 16} and scores[1] > scores[0]


def test_pickle_keeps_weights(data, fitted):
    blob = pickle.dumps(fitted)
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.transform(data[2]), fitted.transform(data[2]))
    n_params = sum(p.numel() for p in fitted.model_.model.parameters())
    assert len(blob) > 4 * n_params and again.get_params() == fitted.get_params()


def test_fit_is_repeatable(data):
    X, _, Xt, _ = data
    est = AutoencoderReducer(**TINY)
    first = est.fit(X).transform(Xt)
    np.testing.assert_allclose(est.fit(X).transform(Xt), first, atol=1e-6)
    np.testing.assert_allclose(AutoencoderReducer(**TINY).fit(X).transform(Xt), first, atol=1e-6)


def test_fit_sets_only_trailing_underscore_attributes(data):
    est = AutoencoderReducer(**TINY)
    before_params = joblib_hash(est.get_params())
    before = set(vars(est))
    est.fit(data[0])
    added = set(vars(est)) - before
    assert added and all(a.endswith("_") for a in added if not a.startswith("_")), added
    assert joblib_hash(est.get_params()) == before_params


def test_transform_leaves_estimator_unchanged(data, fitted):
    state = {k: v for k, v in vars(fitted).items() if k != "model_"}
    weights = {k: v.clone() for k, v in fitted.model_.model.state_dict().items()}
    fitted.transform(data[2])
    fitted.inverse_transform(fitted.transform(data[2][:5]))
    fitted.score(data[2])
    assert joblib_hash({k: v for k, v in vars(fitted).items() if k != "model_"}) == joblib_hash(state)
    for k, v in fitted.model_.model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_transform_is_row_independent(data, fitted):
    Xt = data[2]
    whole = fitted.transform(Xt)
    perm = np.random.default_rng(0).permutation(len(Xt))
    np.testing.assert_allclose(fitted.transform(Xt[perm]), whole[perm], atol=1e-5)
    np.testing.assert_allclose(fitted.transform(Xt[:7]), whole[:7], atol=1e-5)


def test_input_dtypes_and_layouts(data, fitted, tmp_path):
    Xt = data[2][:50]
    want = fitted.transform(Xt)
    np.save(tmp_path / "x.npy", Xt)
    variants = {
        "float64 0..1": Xt / 255.0,
        "float32 0..1": (Xt / 255.0).astype(np.float32),
        "int64": Xt.astype(np.int64),
        "int32": Xt.astype(np.int32),
        "object": Xt.astype(object),
        "list of lists": Xt.tolist(),
        "fortran order": np.asfortranarray(Xt),
        "read-only memmap": np.load(tmp_path / "x.npy", mmap_mode="r"),
        "(n, 28, 28)": Xt.reshape(-1, 28, 28),
        "(n, 1, 28, 28) tensor": torch.from_numpy(Xt.reshape(-1, 1, 28, 28)),
    }
    for name, x in variants.items():
        got = fitted.transform(x)
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    # fitting on float 0..1 pixels trains on the same 8-bit images as uint8 input
    np.testing.assert_allclose(AutoencoderReducer(**TINY).fit(data[0] / 255.0).transform(Xt), fitted.transform(Xt),
                               atol=1e-5)


def test_rejects_nan_inf_and_bad_shapes(data, fitted):
    X = data[0][:50].astype(np.float64) / 255.0
    for bad_value in (np.nan, np.inf):
        Xbad = X.copy()
        Xbad[3, 100] = bad_value
        with pytest.raises(ValueError, match="NaN|infinity"):
            AutoencoderReducer(**TINY).fit(Xbad)
        with pytest.raises(ValueError, match="NaN|infinity"):
            fitted.transform(Xbad)
    with pytest.raises(ValueError, match="X has 100 features, but AutoencoderReducer is expecting 784"):
        fitted.transform(X[:, :100])
    with pytest.raises(ValueError, match="784"):
        AutoencoderReducer(**TINY).fit(X[:, :100])
    with pytest.raises(ValueError, match="2D array"):
        fitted.transform(X[0])
    with pytest.raises(ValueError, match="Negative values"):
        AutoencoderReducer(**TINY).fit(X - 0.5)
    with pytest.raises(ValueError, match="outside"):
        fitted.transform(X * 255.0)
    with pytest.raises(ValueError, match="n_samples=1"):
        AutoencoderReducer(**TINY).fit(X[:1])
    with pytest.raises(ValueError, match="width 5, but the model's latent size is 8"):
        fitted.inverse_transform(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.inverse_transform(np.full((2, 8), np.nan))
    with pytest.raises(ValueError, match="unknown model"):
        AutoencoderReducer(**{**TINY, "model": "unet"}).fit(X)


def test_unfitted_raises_not_fitted(data):
    est = AutoencoderReducer(**TINY)
    for method in (est.transform, est.inverse_transform, est.score):
        with pytest.raises(NotFittedError):
            method(data[2][:3])


def test_batch_norm_model_with_a_last_batch_of_one(data):
    """conv-modified (batch norm) trains when the training split leaves one image over for the last batch."""
    X = data[0][:143]  # 14 validation images, 129 training images: 128 + 1 with batch_size 128
    est = AutoencoderReducer(n_components=4, model="conv-modified", width=0.25, epochs=1, batch_size=128,
                             random_state=0, device="cpu", threads=1).fit(X)
    assert est.transform(X[:2]).shape == (2, 4)


def test_docstring_example_runs():
    import aelab.use.estimator

    result = doctest.testmod(aelab.use.estimator, verbose=False)
    assert result.attempted >= 6 and result.failed == 0


def test_reduce_then_classify_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "reduce_then_classify.py"
    p = subprocess.run([sys.executable, str(script), "--train", "600", "--test", "200", "--epochs", "1",
                        "--components", "8", "--model", "dense", "--width", "0.25"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].startswith("autoencoder  test accuracy") and lines[2].startswith("PCA          test accuracy")
    accuracy = float(lines[1].split()[3])
    assert 0.3 < accuracy <= 1.0


def test_other_image_shapes_digits_rows_and_colour_photographs():
    """Real images of other shapes: scikit-learn's 8x8 digits as arrays and as rows (with image_shape), and
    12x12 colour crops of its sample photographs in (n, H, W, C) layout through the convolutional model."""
    from sklearn.datasets import load_digits, load_sample_images

    x = (load_digits().images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    small = dict(n_components=8, model="dense", width=0.25, epochs=2, random_state=0, threads=1)
    r = AutoencoderReducer(**small).fit(x[:1500])
    assert r.image_shape_ == (1, 8, 8) and r.n_features_in_ == 64
    codes = r.transform(x[1500:])
    assert codes.shape == (297, 8) and r.inverse_transform(codes).shape == (297, 64)
    assert np.allclose(r.transform(x[1500:].reshape(-1, 64)), codes, atol=1e-6)  # rows of the same images
    assert 0.0 < r.score(x[1500:]) <= 1.0
    with pytest.raises(ValueError, match="8x8 grey"):
        r.transform(np.zeros((2, 28, 28), np.float32))
    rows = AutoencoderReducer(**small, image_shape=(1, 8, 8)).fit(x.reshape(-1, 64)[:600])
    assert rows.image_shape_ == (1, 8, 8) and rows.transform(x[:3]).shape == (3, 8)
    with pytest.raises(ValueError, match="image_shape"):
        AutoencoderReducer(**small).fit(x.reshape(-1, 64)[:100])  # rows of 64 pixels: which shape?

    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    crops = np.stack([photos[i % 2][r0:r0 + 12, c0:c0 + 12] for i, (r0, c0) in
                      enumerate(rng.integers(0, 400, size=(240, 2)))])  # (240, 12, 12, 3) uint8
    colour = AutoencoderReducer(n_components=6, model="conv-modified", width=0.25, epochs=1, random_state=0,
                                threads=1).fit(crops[:200])
    assert colour.image_shape_ == (3, 12, 12) and colour.n_features_in_ == 432
    assert colour.transform(crops[200:]).shape == (40, 6)
    assert colour.inverse_transform(colour.transform(crops[200:])).shape == (40, 432)
    assert 0.0 < colour.score(np.moveaxis(crops[200:], -1, 1)) <= 1.0  # (n, C, H, W) works as well
