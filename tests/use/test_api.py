"""aelab.load and TrainedModel: encode / decode / reconstruct on real test images, every input layout."""

from __future__ import annotations

import doctest
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import aelab
from aelab.data import load_dataset
from aelab.errors import AelabError, InputError
from aelab.evaluation import encode_all, reconstruct_all


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """300 real Fashion-MNIST test images, uint8 (300, 28, 28)."""
    return load_dataset("fashion-mnist", test_limit=300).test.images.numpy()


@pytest.fixture(scope="module")
def model(run_path):
    return aelab.load(run_path)


def test_load_matches_the_run_model(run_path, model, images):
    from aelab.runs import Run

    core = Run.open(run_path).load_model("best")
    want_codes = encode_all(core, torch.from_numpy(images)).numpy()
    want_recon = reconstruct_all(core, torch.from_numpy(images)).numpy()[:, 0]
    codes = model.encode(images)
    assert isinstance(codes, np.ndarray) and codes.dtype == np.float32 and codes.shape == (300, 16)
    np.testing.assert_allclose(codes, want_codes, atol=1e-5)
    np.testing.assert_allclose(model.reconstruct(images), want_recon, atol=1e-5)
    assert model.latent == 16 and model.classes is not None and model.classes[0] == "T-shirt/top"
    assert "latent=16" in repr(model)


def test_encode_follows_changes_to_the_model(run_path, images):
    """encode runs a fast copy of ``model`` (batch norm folded); new weights in ``model`` are picked up."""
    trained = aelab.load(run_path)
    before = trained.encode(images[:50])
    with torch.no_grad():
        for p in trained.model.parameters():
            p.mul_(0.5)
    after = trained.encode(images[:50])
    with torch.inference_mode():
        want = trained.model.eval().encode(torch.from_numpy(images[:50]).float().div(255).unsqueeze(1)).numpy()
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, want, atol=1e-4, rtol=1e-4)


def test_every_layout_and_dtype_gives_the_same_codes(model, images, tmp_path):
    want = model.encode(images)
    as_float = images.astype(np.float32) / 255.0
    np.save(tmp_path / "x.npy", images.reshape(-1, 1, 28, 28))
    variants = {
        "float32 (n,1,28,28)": as_float.reshape(-1, 1, 28, 28),
        "float64 (n,784)": (images.astype(np.float64) / 255.0).reshape(-1, 784),
        "int64 0..255": images.astype(np.int64),
        "torch uint8": torch.from_numpy(images),
        "torch float (n,784)": torch.from_numpy(as_float.reshape(-1, 784)),
        "memmap": np.load(tmp_path / "x.npy", mmap_mode="r"),
        "fortran order": np.asfortranarray(as_float),
    }
    for name, x in variants.items():
        np.testing.assert_allclose(model.encode(x), want, atol=1e-5, err_msg=name)
    t = model.encode(images, as_tensor=True)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(want))


def test_reconstruct_keeps_the_input_layout_and_decode_inverts(model, images):
    flat = images.reshape(-1, 784)
    rec_flat = model.reconstruct(flat)
    assert rec_flat.shape == (300, 784) and rec_flat.dtype == np.float32
    assert model.reconstruct(images.reshape(-1, 1, 28, 28)).shape == (300, 1, 28, 28)
    decoded = model.decode(model.encode(images))
    assert decoded.shape == (300, 28, 28) and 0.0 <= decoded.min() and decoded.max() <= 1.0
    np.testing.assert_allclose(decoded.reshape(-1, 784), rec_flat, atol=1e-6)


def test_batches_do_not_change_results(model, images):
    """Streaming in batches (eval mode, no batch statistics) gives the same codes for any batch size."""
    np.testing.assert_allclose(model.encode(images, batch_size=7), model.encode(images, batch_size=1000),
                               atol=1e-5)
    codes = model.encode(images)
    np.testing.assert_allclose(model.decode(codes, batch_size=11), model.decode(codes), atol=1e-6)


def test_reconstructions_are_better_than_noise(model, images):
    """A trained model: its SSIM against the input beats that of another image's reconstruction."""
    from aelab.evaluation.metrics import ssim_per_image

    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1).double()
    rec = torch.from_numpy(model.reconstruct(images)).unsqueeze(1).double()
    own = float(ssim_per_image(rec, x).mean())
    shuffled = float(ssim_per_image(rec.roll(1, dims=0), x).mean())
    assert own > shuffled + 0.1


@pytest.mark.parametrize("bad, words", [
    (np.zeros((5, 32, 32), np.uint8), "shape (5, 32, 32)"),
    (np.zeros((28, 28), np.uint8), "add a batch axis"),
    (np.full((3, 784), np.nan, np.float32), "image 0 holds NaN"),
    (np.full((3, 784), 200.0, np.float32), "divide 0..255 values by 255"),
    (np.full((3, 784), -3, np.int64), "outside 0..255"),
])
def test_bad_images_raise_one_line(model, bad, words):
    with pytest.raises(InputError) as err:
        model.encode(bad)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, AelabError) and isinstance(err.value, ValueError)


def test_bad_codes_raise_one_line(model):
    with pytest.raises(InputError, match="width 3, but the model's latent size is 16"):
        model.decode(np.zeros((2, 3), np.float32))
    codes = np.zeros((4, 16), np.float32)
    codes[2, 5] = np.nan
    with pytest.raises(InputError, match="row 2 holds NaN"):
        model.decode(codes)


def test_pickle_carries_the_weights(model, images):
    blob = pickle.dumps(model)
    assert len(blob) > 4 * sum(p.numel() for p in model.model.parameters())
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.encode(images[:20]), model.encode(images[:20]))


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(AelabError, match="does not exist"):
        aelab.load(tmp_path / "nope")
    with pytest.raises(AelabError, match="not an aelab run"):
        aelab.load(tmp_path)


def test_import_is_light_and_exports_the_api():
    code = ("import sys, aelab; light = 'torch' not in sys.modules; "
            "from aelab import load, AutoencoderReducer, TrainedModel; print(light, callable(load))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
    assert {"load", "AutoencoderReducer", "TrainedModel"} <= set(dir(aelab))


def test_docstring_examples_run(run_path, tmp_path, monkeypatch):
    """The examples in aelab.api run as written, against a run folder at runs/quick."""
    import aelab.use.api

    (tmp_path / "runs").mkdir()
    os.symlink(run_path, tmp_path / "runs" / "quick")
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(aelab.use.api, verbose=False)
    assert result.attempted >= 8 and result.failed == 0


def test_latent_search_example_runs(run_path, tmp_path):
    from pathlib import Path

    from PIL import Image

    script = Path(__file__).resolve().parents[2] / "examples" / "latent_search.py"
    out = tmp_path / "grid.png"
    p = subprocess.run([sys.executable, str(script), str(run_path), "--train", "1000", "--queries", "3",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    share = float(p.stdout.split("% of the 5 nearest")[0].rsplit(" ", 1)[1])
    assert share > 30.0  # ten classes: chance is 10 %
    assert Image.open(out).size == (2 * (28 * 6 + 4), 2 * 28 * 3)
