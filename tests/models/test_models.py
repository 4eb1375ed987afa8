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
    (dict(name="unet", latent=8), "unknown model 'unet'"),
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


@pytest.mark.parametrize(("name", "kwargs"), [("conv-modified", {}), ("dense", {"batch_norm": True}),
                                              ("conv", {"batch_norm": True}), ("conv", {})])
def test_inference_copy_is_the_same_function_with_batch_norm_folded(name, kwargs, data_root):
    """The fast inference copy (batch norm folded, channels-last) equals the eval model on real images."""
    from aelab.data import load_dataset, to_float
    from aelab.models import inference_copy

    torch.manual_seed(0)
    model = build_model(name, 16, **kwargs)
    x = to_float(load_dataset("fashion-mnist", train_limit=512, test_limit=64).train.images)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for i in range(0, 512, 128):  # a few steps, so that the batch-norm statistics and weights are not trivial
        loss = torch.nn.functional.mse_loss(torch.sigmoid(model(x[i:i + 128])), x[i:i + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    fast = inference_copy(model)
    assert model.training, "the original model keeps its mode"
    assert not any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    if name != "dense":
        conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        ref_z, ref_out = model.encode(x[:64]), model(x[:64])
        z = fast.encode(x[:64].contiguous(memory_format=torch.channels_last))
        out = fast.decode(z)
    scale = float(ref_out.abs().max())
    torch.testing.assert_close(z, ref_z, rtol=1e-4, atol=1e-4 * float(ref_z.abs().max()))
    torch.testing.assert_close(out.contiguous(), ref_out, rtol=1e-4, atol=1e-4 * scale)
    # and the comparison can fail: the model in training mode (batch statistics, dropout) is far off
    model.train()
    with torch.no_grad():
        far = float((model(x[:64]) - ref_out).abs().max()) / scale
    if kwargs.get("batch_norm", name == "conv-modified"):
        assert far > 1e-3


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_pooling_before_a_monotone_activation_is_the_same_function(activation):
    """The base model pools before a non-decreasing activation (cheaper); output and gradients equal the
    textbook order conv -> activation -> pool."""
    from aelab.models.layers import MONOTONE

    torch.manual_seed(0)
    model = build_model("conv", 8, activation=activation)
    enc = model.encoder
    kinds = [type(m).__name__ for m in enc]
    first_pool = kinds.index("MaxPool2d")
    assert (kinds[first_pool - 1] == "Conv2d") == (activation in MONOTONE)
    # the textbook order, same modules: an activation right after a pool goes before it
    layers = list(enc)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], torch.nn.MaxPool2d) and type(layers[i + 1]) is type(ACTIVATIONS[activation]()):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    textbook = torch.nn.Sequential(*layers)
    assert [type(m).__name__ for m in textbook][:3] == ["Conv2d", type(ACTIVATIONS[activation]()).__name__,
                                                        "MaxPool2d"]
    assert [type(m).__name__ for m in textbook].count("MaxPool2d") == 2
    x = torch.rand(4, 1, 28, 28)
    z1 = enc(x)
    g1 = torch.autograd.grad(z1.square().sum(), list(enc.parameters()))
    z2 = textbook(x)
    g2 = torch.autograd.grad(z2.square().sum(), list(textbook.parameters()))
    torch.testing.assert_close(z1, z2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel", "output_padding", "bias"), [(3, 1, True), (4, 0, False)])
def test_fast_transposed_convolution_matches_torch(kernel, output_padding, bias, channels_last):
    """aelab's ConvTranspose2d trains with regular convolutions in its backward on CPU; its output and all
    three gradients equal nn.ConvTranspose2d's (float32), and under bf16 autocast they stay within bf16 rounding."""
    from aelab.models import ConvTranspose2d

    torch.manual_seed(0)
    ours = ConvTranspose2d(16, 8, kernel, stride=2, padding=1, output_padding=output_padding, bias=bias)
    ref = torch.nn.ConvTranspose2d(16, 8, kernel, stride=2, padding=1, output_padding=output_padding, bias=bias)
    ref.load_state_dict(ours.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(6, 16, 7, 7).contiguous(memory_format=fmt)
    g = torch.randn(6, 8, 14, 14).contiguous(memory_format=fmt)

    def run(layer: torch.nn.Module, bf16: bool) -> list[torch.Tensor]:
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(xi)
        if layer is ours:  # the fast backward is the one taken (else both sides would run torch's own)
            assert type(y.grad_fn).__name__ == "_ConvCPUBackward"
        y.backward(g.to(y.dtype))
        grads = [xi.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])
        return [y.detach()] + grads

    for bf16, tol in ((False, 1e-5), (True, 2e-2)):
        got, want = run(ours, bf16), run(ref, bf16)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            a, b = a.float(), b.float()
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))
    assert ours.weight.grad.dtype == torch.float32  # bf16 gradients are handed back in the weights' dtype
    ours.eval()  # eval mode (inference, export) takes torch's own path
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convolution_with_relu_inside_matches_convolution_then_relu(transposed, channels_last):
    """Conv2dReLU / ConvTranspose2dReLU train through one oneDNN primitive with a ReLU post-op on CPU; output and
    gradients equal torch's convolution followed by ReLU (float32 exactly up to rounding, bf16 autocast within its
    rounding), with the same parameters; eval mode takes torch's own path."""
    from aelab.models.layers import Conv2dReLU, ConvTranspose2dReLU

    torch.manual_seed(0)
    if transposed:
        ours = ConvTranspose2dReLU(16, 8, 3, stride=2, padding=1, output_padding=1)
        ref = torch.nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        g = torch.randn(6, 8, 14, 14)
    else:
        ours, ref = Conv2dReLU(16, 8, 3, padding=1), torch.nn.Conv2d(16, 8, 3, padding=1)
        g = torch.randn(6, 8, 7, 7)
    ref.load_state_dict(ours.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, g = torch.randn(6, 16, 7, 7).contiguous(memory_format=fmt), g.contiguous(memory_format=fmt)

    def run(layer: torch.nn.Module, bf16: bool) -> list[torch.Tensor]:
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(xi) if layer is ours else torch.relu(layer(xi))
        if layer is ours:
            assert type(y.grad_fn).__name__ == "_ConvCPUBackward"
        y.backward(g.to(y.dtype))
        return [y.detach(), xi.grad, layer.weight.grad, layer.bias.grad]

    for bf16, tol in ((False, 1e-5), (True, 2e-2)):
        got, want = run(ours, bf16), run(ref, bf16)
        assert float(want[0].float().eq(0).float().mean()) > 0.2  # the ReLU cut something
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * float(b.float().abs().max()))
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torch.relu(ref(x)))


def test_the_base_model_keeps_its_layer_numbers_with_relu_inside_its_convolutions():
    """The fused layers take the convolution's place and an Identity the ReLU's: a checkpoint of the base model
    keeps its keys (a model saved before the fusion loads), and eval mode computes the same function."""
    model = build_model("conv", 16)
    kinds = [type(m).__name__ for m in model.decoder]
    assert kinds[3:7] == ["ConvTranspose2dReLU", "Identity", "ConvTranspose2dReLU", "Identity"], kinds
    keys = set(model.state_dict())
    assert {"encoder.6.weight", "decoder.3.weight", "decoder.5.weight", "decoder.7.weight"} <= keys
    assert not any(k.startswith(("encoder.7.", "decoder.4.", "decoder.6.")) for k in keys)


# ------------------------------------------------------------------------------------------ other image shapes
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 30, 22)])
def test_every_model_takes_any_image_shape(name, shape):
    """Dense for any size; the convolutional models pad sides 4 does not divide and crop the output back."""
    model = build_model(name, 4, width=0.25, shape=shape).eval()
    x = torch.rand(2, *shape)
    assert model.encode(x).shape == (2, 4)
    assert model(x).shape == (2, *shape)
    assert model.image_shape == shape and model.hparams["shape"] == list(shape)
    again = build_model(name, 4, **{k: v for k, v in model.hparams.items() if k not in ("model", "latent")})
    again.load_state_dict(model.state_dict())  # the hparams rebuild the same architecture (a checkpoint's job)
    assert torch.allclose(again.eval()(x), model(x))


def test_padding_is_said_only_when_the_path_does_not_divide():
    from aelab.models import padding_note

    assert padding_note((1, 28, 28)) is None and padding_note((3, 32, 32)) is None and padding_note((1, 8, 8)) is None
    note = padding_note((3, 30, 22))
    assert note and "30x22" in note and "32x24" in note and "crop" in note
    kinds = [type(m).__name__ for m in build_model("conv-modified", 4, shape=(3, 30, 22)).modules()]
    assert "PadTo" in kinds and "CropTo" in kinds
    assert "PadTo" not in {type(m).__name__ for m in build_model("conv-modified", 4, shape=(3, 32, 32)).modules()}


def test_the_default_shape_keeps_old_hparams_and_weights():
    """A model of 28x28 grey images records no shape: checkpoints of older runs (no 'shape') rebuild the same."""
    for name in sorted(MODELS):
        model = build_model(name, 8)
        assert "shape" not in model.hparams and model.image_shape == (1, 28, 28)
        same = build_model(name, 8, shape=(1, 28, 28))
        assert same.hparams == model.hparams
        assert list(same.state_dict()) == list(model.state_dict())


def test_pca_of_colour_images_reconstructs_their_shape():
    images = (torch.rand(50, 3, 6, 10) * 255).to(torch.uint8)
    pca = PCAModel(4, (3, 6, 10)).fit(images)
    assert pca.reconstruct(images).shape == (50, 3, 6, 10)
    again = PCAModel.from_state(pca.state(), (3, 6, 10))
    assert torch.allclose(pca.reconstruct(images), again.reconstruct(images), atol=1e-6)


def test_pca_on_fewer_images_than_values_uses_the_exact_svd_and_the_same_components(data_root):
    """Fewer images than values: the exact full SVD (fast), not the D x D covariance, with the same result."""
    from aelab.data import load_raw

    (x, _, _, _), _ = load_raw("fashion-mnist", data_dir=data_root)
    images = torch.from_numpy(x[:300])  # 300 images of 784 values
    pca = PCAModel(16).fit(images)
    assert pca.pca.svd_solver == "full"
    eigh = PCAModel(16).fit(torch.from_numpy(x[:1000]))
    assert eigh.pca.svd_solver == "covariance_eigh"  # more images than values: the covariance
    eigh.pca.set_params(svd_solver="covariance_eigh").fit(pca._flat(images))
    assert torch.allclose(pca.reconstruct(images), eigh.reconstruct(images), atol=1e-4)
