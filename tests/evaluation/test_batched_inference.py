"""The one batched-inference helper (``evaluation.passes.BatchedInference``): the same codes and reconstructions as
the model called directly, on real Fashion-MNIST images held in memory or read from disk (``data.stream``), for
any batch size; large images take fewer per pass (``models.inference_batch`` of the model's image shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aelab.data import load_raw, to_float
from aelab.data.stream import ImageStore, open_npy
from aelab.evaluation.passes import BatchedInference, encode_all, encode_reconstruct_all
from aelab.models import INFERENCE_BATCH, Autoencoder, build_model, inference_batch

N_IMAGES = 300


@pytest.fixture(scope="module")
def images(data_root: Path) -> torch.Tensor:
    """A real Fashion-MNIST test slice, uint8 (n, 28, 28)."""
    (_, _, test_x, _), _ = load_raw("fashion-mnist")
    return torch.from_numpy(test_x[:N_IMAGES].copy())


@pytest.fixture(scope="module")
def store(images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """The same images as a split read from disk batch by batch."""
    path = tmp_path_factory.mktemp("store") / "images.npy"
    np.save(path, images.numpy())
    found = open_npy(path, "write it again")
    assert found is not None
    return ImageStore([found], "nhw", squeeze=True)


def _settled(name: str, images: torch.Tensor) -> Autoencoder:
    """A model whose batch norms hold the statistics of real images (so folding them changes something)."""
    torch.manual_seed(0)
    model = build_model(name, 8, width=0.5)
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), 100):
            model(to_float(images[i:i + 100]))
    return model.eval()


@pytest.fixture(scope="module")
def direct(images: torch.Tensor) -> dict[str, tuple[Autoencoder, torch.Tensor, torch.Tensor]]:
    """Each model with its codes and reconstructions of ``images`` from the model called directly."""
    out = {}
    for name in ("conv-modified", "dense"):
        model = _settled(name, images)
        with torch.no_grad():
            z = model.encode(to_float(images))
            out[name] = (model, z, torch.sigmoid(model.decode(z)))
    return out


@pytest.mark.parametrize("name", ["conv-modified", "dense"])
@pytest.mark.parametrize("batch", [None, 7])
@pytest.mark.parametrize("where", ["memory", "disk"])
def test_the_helper_gives_what_the_model_gives(name: str, batch: int | None, where: str, images, store, direct
                                               ) -> None:
    model, want_z, want_x = direct[name]
    source = images if where == "memory" else store
    run = BatchedInference(model, batch)
    parts = run.map(source, lambda m, x: (m.encode(x).cpu(), torch.sigmoid(m.decode(m.encode(x))).cpu()))
    assert len(parts) == -(-N_IMAGES // (batch or run.batch))
    z, x = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    torch.testing.assert_close(z, want_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x, want_x, rtol=1e-4, atol=1e-5)
    z2, x2 = encode_reconstruct_all(model, source, batch)  # the evaluation's passes, chunk by chunk
    torch.testing.assert_close(z2, want_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x2, want_x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(encode_all(model, source, batch), want_z, rtol=1e-4, atol=1e-5)


def test_inputs_and_aligned_rows(images, store, direct) -> None:
    """uint8 images become float pixels (n, 1, H, W) in [0, 1] on the model's device; aligned tensors are sliced
    alike; a preparation runs on each raw batch first; codes (2-D) pass as float32."""
    run = BatchedInference(direct["conv-modified"][0], batch=50)
    pixels = to_float(images)
    pairs = run.map(store, lambda m, x, p: (x.cpu(), p.cpu()), pixels)
    assert all(torch.equal(x, p) for x, p in pairs)
    assert torch.equal(torch.cat([x for x, _ in pairs]), pixels)
    assert pairs[0][0].is_contiguous(memory_format=torch.channels_last)
    flipped = run.map(images, lambda m, x: x.cpu(), prepare=lambda u8: 255 - u8)
    assert torch.equal(torch.cat(flipped), to_float(255 - images))
    codes = run.inputs(torch.zeros(3, 8, dtype=torch.float64))
    assert codes.dtype == torch.float32 and codes.shape == (3, 8)
    assert run.map(images[:0], lambda m, x: x) == []


def test_large_images_take_fewer_per_pass() -> None:
    shape = (3, 128, 128)
    model = build_model("conv", 8, shape=shape)
    run = BatchedInference(model)
    assert run.batch == inference_batch(torch.device("cpu"), shape) < INFERENCE_BATCH
    assert BatchedInference(build_model("dense", 8)).batch == INFERENCE_BATCH
