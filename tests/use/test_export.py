"""aelab export: ONNX and TorchScript encoder/decoder files that compute what the PyTorch model computes."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import aelab
from aelab.cli import main
from aelab.data import load_dataset
from aelab.use.export import export_run


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    """500 real test images as float32 (500, 1, 28, 28) in [0, 1]."""
    x = load_dataset("fashion-mnist", test_limit=500).test.images.numpy()
    return (x.astype(np.float32) / 255.0)[:, None]


def _run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_onnx_matches_pytorch_on_real_test_images(run_path, test_images, tmp_path):
    r = CliRunner().invoke(main, ["export", str(run_path), "--format", "onnx", "-o", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    assert "max |difference|" in r.stdout
    model = aelab.load(run_path)
    enc = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in enc.get_inputs()] == ["images"] and [o.name for o in dec.get_outputs()] == ["images"]
    want_codes = model.encode(test_images)
    want_pixels = model.decode(want_codes)[:, None]
    for batch in (1, 37, 500):  # the batch axis is dynamic
        codes = _run(enc, test_images[:batch])
        np.testing.assert_allclose(codes, want_codes[:batch], atol=1e-5, rtol=0)
        pixels = _run(dec, want_codes[:batch])
        np.testing.assert_allclose(pixels, want_pixels[:batch], atol=1e-5, rtol=0)
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["latent"] == 16 and info["format"] == "onnx" and max(info["checked_max_abs_diff"].values()) < 1e-5
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["decoder.onnx", "encoder.onnx", "export.json"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch(run_path, test_images, tmp_path):
    res = export_run(run_path, "torchscript", tmp_path / "ts")
    model = aelab.load(run_path)
    enc, dec = torch.jit.load(str(res.encoder)), torch.jit.load(str(res.decoder))
    x = torch.from_numpy(test_images[:123])
    with torch.inference_mode():
        codes = enc(x)
        pixels = dec(codes)
    np.testing.assert_allclose(codes.numpy(), model.encode(test_images[:123]), atol=1e-5)
    np.testing.assert_allclose(pixels.numpy()[:, 0], model.decode(codes.numpy()), atol=1e-5)


def test_export_default_folder_and_bad_input(run_path, tmp_path):
    res = export_run(run_path, "onnx")
    assert res.encoder == run_path / "export" / "encoder.onnx" and res.decoder.is_file()
    r = CliRunner().invoke(main, ["export", str(tmp_path / "nope")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"error: run folder {tmp_path / 'nope'} does not exist; give the folder 'aelab train' printed"]
    r = CliRunner().invoke(main, ["export", str(run_path), "--format", "tflite"])
    assert r.exit_code == 2
