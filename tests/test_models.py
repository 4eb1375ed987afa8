"""Models: every registered architecture keeps the interface for every latent size and activation."""

from __future__ import annotations

import pytest
import torch

from aelab.errors import ConfigError
from aelab.models import ACTIVATIONS, MODELS, PCAModel, build_model, count_parameters


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("latent", [1, 2, 64, 1024])
def test_interface_shapes(name, latent):
    model = build_model(name, latent).eval()
    x = torch.rand(3, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (3, latent)
    assert model.decode(z).shape == (3, 1, 28, 28)
    assert torch.allclose(model(x), model.decode(z))
    assert model.hparams["model"] == name and model.latent == latent


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activations_and_width(activation):
    narrow = build_model("conv", 8, width=0.5, activation=activation)
    wide = build_model("conv", 8, width=1.0, activation=activation)
    assert count_parameters(narrow) < count_parameters(wide)
    assert narrow(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)


def test_modified_model_has_batch_norm_dropout_and_transposed_convs():
    kinds = {type(m).__name__ for m in build_model("conv-modified", 64).modules()}
    assert {"BatchNorm2d", "Dropout", "ConvTranspose2d"} <= kinds
    assert "BatchNorm2d" not in {type(m).__name__ for m in build_model("conv", 64).modules()}


@pytest.mark.parametrize("bad, match", [
    (dict(name="resnet", latent=8), "unknown model 'resnet'"),
    (dict(name="conv", latent=0), "latent size 0"),
    (dict(name="conv", latent=2000), "latent size 2000"),
    (dict(name="conv", latent=8, activation="swish"), "unknown activation 'swish'"),
])
def test_bad_model_arguments(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_model(**bad)


def test_pca_state_round_trip():
    images = (torch.rand(200, 28, 28) * 255).to(torch.uint8)
    pca = PCAModel(5).fit(images)
    again = PCAModel.from_state(pca.state())
    assert torch.allclose(pca.reconstruct(images), again.reconstruct(images), atol=1e-6)
    assert pca.encode(images).shape == (200, 5)
