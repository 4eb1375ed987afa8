"""The resnet family (``resnet``, ``resnet-vae``): any image shape in and out, a map of at most 8 px before the
code, exact rebuilding from a checkpoint, the VAE's terms, the inference copy, ONNX export, real-data learning.

Pure unit tests (they run without the data) except those that ask for ``data_root``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aelab.errors import ConfigError
from aelab.models import VAE, VAEOutput, build_model, count_parameters, inference_copy, kl_per_dim, padding_note_of
from aelab.models.layers import PadTo
from aelab.models.resnet import auto_levels, groups, level_channels
from aelab.runs import model_from_checkpoint, save_checkpoint


def code_map(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """Shape of the map the encoder flattens into the code (the input of its Flatten)."""
    flat = next(m for m in model.encoder if isinstance(m, torch.nn.Flatten))
    seen: list[tuple[int, ...]] = []
    handle = flat.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model.encode(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 48, 80), (1, 256, 256)])
@pytest.mark.parametrize("name", ["resnet", "resnet-vae"])
def test_any_shape_in_and_out_with_a_small_map(name, shape):
    torch.manual_seed(0)
    model = build_model(name, 16, width=0.25, shape=shape).eval()
    x = torch.rand(2, *shape)
    z = model.encode(x)
    assert z.shape == (2, 16)
    assert model.decode(z).shape == (2, *shape) and model(x).shape == (2, *shape)
    assert model.image_shape == shape and model.hparams["levels"] == auto_levels(shape)
    _, c, h, w = code_map(model, x)
    assert max(h, w) <= 8 and c <= 256 // 4  # width 0.25 caps the channels at 64
    out = model.train()(x)  # training mode: a VAE gives a sample's logits and both posterior heads
    logits = out.logits if isinstance(out, VAEOutput) else out
    assert logits.shape == (2, *shape) and bool(torch.isfinite(logits).all())


@settings(max_examples=8, deadline=None)
@given(c=st.sampled_from([1, 3]), h=st.integers(4, 72), w=st.integers(4, 72))
def test_every_shape_pads_and_crops_back(c, h, w):
    """Any (C, H, W): the output has the input's shape, the map is at most 8 px, the pad appears only when the
    path does not divide the sides, and the padding note says so."""
    model = build_model("resnet", 3, width=0.125, shape=(c, h, w)).eval()
    x = torch.rand(1, c, h, w)
    assert model(x).shape == (1, c, h, w)
    _, _, mh, mw = code_map(model, x)
    assert max(mh, mw) <= 8
    step = 2 ** model.hparams["levels"]
    divides = h % step == 0 and w % step == 0
    assert any(isinstance(m, PadTo) for m in model.encoder) is not divides
    assert (padding_note_of(model) is None) is divides


def test_channels_grow_to_a_cap_and_parameters_stay_modest():
    counts = {}
    for side in (28, 64, 128, 256):
        model = build_model("resnet", 64, shape=(3, side, side))
        head = model.encoder[-1]
        assert isinstance(head, torch.nn.Linear) and head.in_features <= 8 * 8 * 256  # no huge dense layer
        counts[side] = count_parameters(model)
    assert max(counts.values()) < 3_000_000, counts  # conv-modified at 128 px: ~34 M
    assert level_channels(64, 3, 1.0, 256) == [16, 32, 64, 128]           # 64 -> 32 -> 16 -> 8
    assert level_channels(32, 3, 1.0, 256) == [32, 64, 128, 256]          # doubling per level, below 32 px
    assert level_channels(32, 4, 1.0, 256)[-1] == 256                     # ... up to the cap
    assert level_channels(32, 3, 0.5, 256) == [16, 32, 64, 128]           # times the width
    assert [groups(c) for c in (4, 16, 32, 48, 128, 256, 13)] == [1, 4, 8, 12, 32, 32, 1]
    for c in (4, 8, 12, 20, 24, 64, 96, 200, 512):
        assert c % groups(c) == 0


def test_levels_given_and_bad_options_are_one_line_errors():
    model = build_model("resnet", 8, levels=1, width=0.25)  # 28 -> 14: the map may be larger when asked for
    assert code_map(model, torch.rand(1, 1, 28, 28))[2:] == (14, 14) and model.hparams["levels"] == 1
    for kwargs, words in [(dict(levels=0), "--levels between 1"), (dict(levels=9), "--levels between 1"),
                          (dict(levels=6), "use --levels 5 or fewer"), (dict(blocks=0), "residual blocks"),
                          (dict(batch_norm=True), "GroupNorm"), (dict(max_channels=4), "max_channels"),
                          (dict(activation="swish"), "unknown activation")]:
        with pytest.raises(ConfigError, match=words) as err:
            build_model("resnet", 8, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="too small"):
        build_model("resnet", 8, shape=(1, 1, 1))
    with pytest.raises(ConfigError, match="likelihood"):
        build_model("resnet-vae", 8, likelihood="poisson")
    assert build_model("resnet", 8, batch_norm=False).hparams["model"] == "resnet"  # --no-batch-norm is fine


@pytest.mark.parametrize(("name", "kwargs"), [
    ("resnet", dict(shape=(3, 48, 80))),
    ("resnet", dict(levels=3, width=0.5, activation="gelu", blocks=2, max_channels=64, dropout=0.1,
                    shape=(1, 30, 22))),
    ("resnet-vae", dict(likelihood="gaussian", shape=(3, 32, 32))),
])
def test_checkpoint_rebuilds_the_same_model(name, kwargs, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 12, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights unlike a fresh model's
    path = save_checkpoint(tmp_path / "best.safetensors", {f"model.{k}": v for k, v in model.state_dict().items()},
                           {"hparams": model.hparams})
    again = model_from_checkpoint(path, {"model": name, "latent": 12})
    assert again.hparams == model.hparams and type(again) is type(model)
    x = torch.rand(3, *model.image_shape)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    # and the test can fail: a model built from other hparams does not take the weights
    with pytest.raises(RuntimeError):
        build_model(name, 12, **dict(kwargs, width=2.0)).load_state_dict(model.state_dict())


def test_vae_terms_are_finite_and_prior_samples_decode():
    torch.manual_seed(0)
    shape = (3, 48, 80)
    model = build_model("resnet-vae", 6, width=0.25, shape=shape)
    assert isinstance(model, VAE) and isinstance(model.encoder[-1], torch.nn.Linear)
    x = torch.rand(4, *shape)
    out = model.train()(x)
    assert isinstance(out, VAEOutput) and out.mean.shape == out.logvar.shape == (4, 6)
    ll = model.log_likelihood(out.logits, x)
    kl = kl_per_dim(out.mean, out.logvar)
    elbo = ll - kl.sum(1)
    assert ll.shape == (4,) and kl.shape == (4, 6) and bool(torch.isfinite(elbo).all())
    assert float(ll.detach().max()) < 0 and float(kl.detach().min()) >= 0  # a log-probability; a KL is >= 0
    (-elbo.mean()).backward()
    assert float(model.logvar_head.weight.grad.abs().sum()) > 0 and float(model.encoder[0].weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        w, lls = model.log_weights(x, k=5, generator=torch.Generator().manual_seed(0))
        iwae = torch.logsumexp(w, 1) - math.log(5)
        assert w.shape == lls.shape == (4, 5) and bool(torch.isfinite(iwae).all())
        assert bool((iwae >= w.mean(1) - 1e-3).all())  # the IWAE bound is at least the k-sample ELBO
        samples = torch.sigmoid(model.decode(model.prior_sample(3, torch.Generator().manual_seed(1))))
    assert samples.shape == (3, *shape) and 0 <= float(samples.min()) and float(samples.max()) <= 1


def test_channels_last_trains_like_contiguous():
    """The trainer runs convolutional models channels-last on CPU: same outputs, and a step learns."""
    torch.manual_seed(0)
    model = build_model("resnet", 8, width=0.25, shape=(3, 40, 24))
    x = torch.rand(4, 3, 40, 24)
    with torch.no_grad():
        ref = model(x)
    model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-4,
                                   atol=1e-5)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.nn.functional.binary_cross_entropy_with_logits(model(xc), x).backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.fixture(scope="module")
def fashion(data_root) -> torch.Tensor:
    """320 real Fashion-MNIST training images, (320, 1, 28, 28) floats in [0, 1]."""
    from aelab.data import load_dataset, to_float

    return to_float(load_dataset("fashion-mnist", train_limit=320, test_limit=64).train.images)[:320]


def enlarged(x: torch.Tensor, size: int) -> torch.Tensor:
    """Fashion-MNIST enlarged (bilinear), in colour: the same content at more pixels."""
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def fit(model: torch.nn.Module, x: torch.Tensor, steps: int, batch: int = 32) -> None:
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for i in range(steps):
        xb = x[(i * batch) % len(x):][:batch]
        out = model(xb)
        logits = out.logits if isinstance(out, VAEOutput) else out
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, xb)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(("name", "size"), [("resnet", None), ("resnet", 64), ("resnet-vae", None)])
def test_a_few_steps_on_real_images_reduce_the_loss(name, size, fashion):
    torch.manual_seed(0)
    x = fashion if size is None else enlarged(fashion, size)
    train, held = x[:256], x[256:]
    model = build_model(name, 16, width=0.5, shape=tuple(x.shape[1:]))

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(torch.nn.functional.binary_cross_entropy_with_logits(model(held), held))

    before = held_loss()
    fit(model, train, steps=16)
    after = held_loss()
    assert after < before - 0.05, (before, after)  # BCE on held-out images: ~0.69 at the start


@pytest.mark.parametrize("name", ["resnet", "resnet-vae"])
def test_inference_copy_is_the_same_function(name, fashion):
    """GroupNorm cannot be folded into a convolution: the copy keeps it, runs channels-last, and matches the
    eval model (both posterior heads of the VAE too) on real images after some training."""
    torch.manual_seed(0)
    x = fashion[:128]
    model = build_model(name, 8, width=0.5)
    fit(model, x, steps=4)
    fast = inference_copy(model)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    model.eval()
    xc = x[:64].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref_z, ref_out = model.encode(x[:64]), model(x[:64])
        z = fast.encode(xc)
        torch.testing.assert_close(z, ref_z, rtol=1e-4, atol=1e-4 * float(ref_z.abs().max()))
        torch.testing.assert_close(fast.decode(z).contiguous(), ref_out, rtol=1e-4,
                                   atol=1e-4 * float(ref_out.abs().max()))
        if isinstance(model, VAE):
            m_ref, lv_ref = model.posterior(x[:64])
            m, lv = fast.posterior(xc)
            torch.testing.assert_close(lv, lv_ref, rtol=1e-4, atol=1e-4 * float(lv_ref.abs().max()))
            torch.testing.assert_close(m, m_ref, rtol=1e-4, atol=1e-4 * float(m_ref.abs().max()))


def test_onnx_export_matches_pytorch(tmp_path):
    """ONNX export of a non-square VAE (pad and crop, GroupNorm, nearest upsampling): ONNX Runtime gives
    PyTorch's output, at the exported batch and at another one (the batch axis is dynamic)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from aelab.use.export import export_model, parts

    torch.manual_seed(0)
    model = build_model("resnet-vae", 4, width=0.125, shape=(3, 20, 36))
    done = export_model(model, tmp_path, "onnx")
    assert max(done.max_abs_diff.values()) < 1e-4, done.max_abs_diff
    enc, dec = parts(model)
    x = torch.rand(3, 3, 20, 36)
    with torch.no_grad():
        want_z = enc(x)
        want_x = dec(want_z)
    got_z = ort.InferenceSession(str(done.encoder)).run(None, {"images": x.numpy()})[0]
    got_x = ort.InferenceSession(str(done.decoder)).run(None, {"codes": want_z.numpy()})[0]
    assert got_z.shape == (3, 4) and got_x.shape == (3, 3, 20, 36)
    assert abs(got_z - want_z.numpy()).max() < 1e-4 and abs(got_x - want_x.numpy()).max() < 1e-4


def test_inference_batch_shrinks_with_the_image():
    """Up to 32x32 RGB the batch is as before; larger images take proportionally fewer, so that a batch's
    activations stay bounded (256 images of 128x128 held ~0.5 GB in the resnet copy)."""
    from aelab.models import inference_batch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [inference_batch(cpu, s) for s in (None, (1, 28, 28), (3, 32, 32))] == [256, 256, 256]
    assert [inference_batch(cpu, (3, s, s)) for s in (64, 128, 256)] == [64, 16, 8]
    assert inference_batch(gpu) == inference_batch(gpu, (1, 28, 28)) == 4096
    assert inference_batch(gpu, (3, 64, 64)) == 1024
