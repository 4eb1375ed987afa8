"""The fast path computes what the plain path computes: same loss, same gradients, same first step.

The reference is the textbook PyTorch path: the same architecture in contiguous NCHW float32, fed plain NCHW
float32 images, with the loss and optimizer built from the same config. Real Fashion-MNIST images, one batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from aelab.config import resolve
from aelab.data import DataBundle, Split, load_dataset, to_float
from aelab.device import native_bf16, select_precision
from aelab.models import build_model
from aelab.runs import Run
from aelab.training import Trainer, make_loss, make_optimizer

BATCH = 64
# Channels-last BatchNorm2d on CPU (torch 2.13, fp32) normalises real conv features with ~1e-4 relative error
# (NCHW: ~1e-7); through conv-modified's eleven BatchNorm layers the gradients then drift by 3-40% of their
# largest entry from the float64 answer, while the NCHW float32 path stays within 1e-5 (benchmarks/README.md).
# The Trainer keeps channels-last for them all the same (3x faster); this documents the deviation and flags
# itself (strict) once torch's kernel or our path is fixed.
BN_CHANNELS_LAST = pytest.mark.xfail(strict=True, reason="channels-last BatchNorm2d is inaccurate in fp32 on "
                                                         "CPU; the Trainer's conv-modified path inherits it")
RECIPES = [pytest.param("seed-64", {}, id="seed-64"),  # the base model's recipe
           pytest.param("default", {"dropout": 0.0}, id="default", marks=BN_CHANNELS_LAST)]


@pytest.fixture(scope="module")
def one_batch(data_root) -> DataBundle:
    b = load_dataset("fashion-mnist", train_limit=BATCH * 4, test_limit=BATCH)
    return DataBundle(name=b.name, classes=b.classes, source=b.source, test=b.test,
                      train=Split(b.train.images[:BATCH], b.train.labels[:BATCH]),
                      val=Split(b.val.images[:BATCH], b.val.labels[:BATCH]))


def reference_model(trainer: Trainer, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    cfg = trainer.cfg
    ref = build_model(cfg.model, **cfg.model_kwargs())
    ref.load_state_dict(state)
    for p in ref.parameters():
        assert p.is_contiguous()  # the plain layout
    return ref


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("preset", "extra"), RECIPES)
def test_channels_last_loss_and_gradients_match_nchw(preset: str, extra: dict, one_batch: DataBundle,
                                                     tmp_path: Path) -> None:
    cfg = resolve(preset, overrides=dict(threads=1, precision="fp32", **extra))
    trainer = Trainer(cfg, Run(tmp_path), bundle=one_batch, progress=False)
    fast = trainer.model
    first_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert trainer.channels_last and first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    ref = reference_model(trainer, {k: v.clone() for k, v in fast.state_dict().items()})
    x = to_float(one_batch.train.images)
    loss_fn = make_loss(cfg)

    ref_loss = loss_fn(ref(x), x)
    ref_loss.backward()
    x_cl = x.contiguous(memory_format=torch.channels_last) if trainer.channels_last else x
    fast_loss = loss_fn(fast(x_cl), x_cl)
    fast_loss.backward()

    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-5, atol=1e-6)
    g_ref, g_fast = grads(ref), grads(fast)
    assert g_ref.keys() == g_fast.keys()
    for name, g in g_ref.items():
        scale = float(g.abs().max()) + 1e-12
        torch.testing.assert_close(g_fast[name].contiguous(), g, rtol=1e-3, atol=1e-4 * scale,
                                   msg=lambda m, n=name: f"gradient of {n}: {m}")
    # the comparison can fail: a gradient from another batch is far off
    other = to_float(one_batch.val.images)
    ref.zero_grad()
    loss_fn(ref(other), other).backward()
    far = max(float((g - g_ref[n]).abs().max() / (g_ref[n].abs().max() + 1e-12)) for n, g in grads(ref).items())
    assert far > 1e-2


@pytest.mark.parametrize(("preset", "extra"), RECIPES)
def test_trainer_step_matches_plain_step(preset: str, extra: dict, one_batch: DataBundle, tmp_path: Path) -> None:
    """One epoch of one batch through ``Trainer.fit`` (whatever path it takes) equals one plain step."""
    cfg = resolve(preset, overrides=dict(threads=1, batch_size=BATCH, epochs=1, patience=0, optimizer="sgd",
                                         lr=0.05, schedule="constant", precision="fp32", **extra))
    trainer = Trainer(cfg, Run(tmp_path), bundle=one_batch, progress=False)
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    ref = reference_model(trainer, start)
    ref.train()
    x = to_float(one_batch.train.images)
    opt = make_optimizer(cfg, ref)
    loss = make_loss(cfg)(ref(x), x)
    loss.backward()
    opt.step()

    assert trainer.state.history[0]["train_loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    after = trainer.model.state_dict()
    for name, value in ref.state_dict().items():
        if not value.is_floating_point():  # BatchNorm's step counter
            assert torch.equal(after[name], value)
            continue
        step_ref, step_fast = value - start[name], after[name].contiguous() - start[name]
        scale = float(step_ref.abs().max())
        assert scale > 0, f"{name} did not move"  # so that the comparison below means something
        ulps = 8 * torch.finfo(torch.float32).eps * float(value.abs().max())  # rounding of the weights themselves
        torch.testing.assert_close(step_fast, step_ref, rtol=1e-3, atol=1e-3 * scale + ulps,
                                   msg=lambda m, n=name: f"the step of {n}: {m}")


NEEDS_BF16 = pytest.mark.skipif(not native_bf16(torch.device("cpu")),
                                reason="this CPU has no native bf16; the Trainer's auto precision is fp32 here")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / (b.float().norm() + 1e-12))


@NEEDS_BF16
@pytest.mark.parametrize(("preset", "global_bound", "per_parameter_bound"),
                         [("seed-64", 0.01, 0.05), ("default", 0.15, None)])
def test_bf16_autocast_loss_and_gradients_match_fp32(preset: str, global_bound: float,
                                                     per_parameter_bound: float | None, one_batch: DataBundle,
                                                     tmp_path: Path) -> None:
    """The bf16 path (what ``precision auto`` takes where bf16 is native and faster) against fp32 on the same batch:
    the loss within bf16's rounding (8 mantissa bits, ~0.4%) and the gradients within bf16 tolerance.

    Measured against a float64 NCHW reference (64 real images): the base model's bf16 gradients are off by
    0.14% of their norm (2.6% for the worst parameter); conv-modified's by 7% (up to 35% for single early
    layers: its eleven batch norms divide by batch statistics, and keeping them in fp32 does not change it).
    Training absorbs this: the default recipe reaches the same test quality in bf16 as in fp32 (SSIM 0.8900 vs
    0.8901, PSNR 24.52 vs 24.51 dB after 12 epochs, benchmarks/results/recipe.jsonl, tags A-default and C-bf16).
    """
    cfg = resolve(preset, overrides=dict(threads=1, dropout=0.0, precision="bf16"))
    trainer = Trainer(cfg, Run(tmp_path), bundle=one_batch, progress=False)
    assert trainer.precision == "bf16" and trainer.autocast.fast_dtype == torch.bfloat16
    model = trainer.model
    x = trainer._batch(one_batch.train.images)
    loss_fn = make_loss(cfg)

    def loss_and_grads(fast: bool) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            logits = model(x)
        assert logits.dtype == (torch.bfloat16 if fast else torch.float32)
        loss = loss_fn(logits.float(), x)
        loss.backward()
        return float(loss.detach()), grads(model)

    def global_error(g: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
        return float(torch.stack([(g[n] - r).norm() for n, r in ref.items()]).norm()
                     / torch.stack([r.norm() for r in ref.values()]).norm())

    ref_loss, g_ref = loss_and_grads(False)
    fast_loss, g_fast = loss_and_grads(True)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-2)
    assert global_error(g_fast, g_ref) < global_bound
    if per_parameter_bound is not None:
        errors = {n: relative_error(g_fast[n], g) for n, g in g_ref.items()}
        assert max(errors.values()) < per_parameter_bound, errors
    # the comparison can fail: the gradient of another batch is far off
    other = trainer._batch(one_batch.val.images)
    model.zero_grad()
    loss_fn(model(other), other).backward()
    assert global_error(grads(model), g_ref) > 2 * global_bound


def test_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert select_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr("aelab.device.native_bf16", lambda device: True)
    monkeypatch.setattr("aelab.device.bf16_pays", lambda device: True)
    assert select_precision("auto", cpu) == "bf16"
    monkeypatch.setattr("aelab.device.bf16_pays", lambda device: False)  # native, but slower here: fp32
    assert select_precision("auto", cpu) == "fp32"
    monkeypatch.setattr("aelab.device.native_bf16", lambda device: False)
    monkeypatch.setattr("aelab.device.bf16_pays", lambda device: True)
    assert select_precision("auto", cpu) == "fp32"
    with pytest.warns(UserWarning, match="emulated and slow"):
        assert select_precision("bf16", cpu) == "bf16"


@NEEDS_BF16
def test_bf16_training_learns_and_records_its_precision(one_batch: DataBundle, tmp_path: Path) -> None:
    from aelab.checkpoints import load_checkpoint

    cfg = resolve("seed-64", overrides=dict(threads=1, batch_size=16, epochs=2, patience=0, lr=3e-3,
                                            precision="bf16"))
    trainer = Trainer(cfg, Run(tmp_path), bundle=one_batch, progress=False)
    history = trainer.fit().history
    assert history[1]["train_loss"] < history[0]["train_loss"]
    _, meta = load_checkpoint(Run(tmp_path).last)
    assert meta["precision"] == "bf16"


def test_native_bf16_needs_the_bf16_instructions_not_just_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN's own check says yes on any AVX-512 CPU (it would emulate bf16 there, slower than fp32); aelab asks
    for AVX512-BF16 or AMX on x86."""
    cpu = torch.device("cpu")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr("aelab.device.bf16_pays", lambda device: True)
    assert not native_bf16(cpu) and select_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert native_bf16(cpu) and select_precision("auto", cpu) == "bf16"
    assert not native_bf16(torch.device("meta"))


def test_auto_measures_whether_bf16_pays_and_remembers_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The probe times both precisions on this machine; its verdict is written to the user cache and read back
    (a second process does not measure again), and a verdict in the cache decides without a measurement."""
    import json

    from aelab import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(device, "_VERDICTS", {})
    verdict = device.probe_precisions(batch=8, rounds=1)
    assert verdict["fp32_s"] > 0 and verdict["bf16_s"] > 0
    assert verdict["bf16"] == (verdict["fp32_s"] >= device.PROBE_GAIN * verdict["bf16_s"])
    calls: list[int] = []
    monkeypatch.setattr(device, "probe_precisions", lambda: calls.append(1) or {"bf16": False, "fp32_s": 1.0})
    cpu = torch.device("cpu")
    assert device.bf16_pays(cpu) is False and calls == [1]
    saved = json.loads((tmp_path / "aelab" / "precision.json").read_text())
    (key,) = saved
    assert "torch" in key and saved[key]["bf16"] is False
    monkeypatch.setattr(device, "_VERDICTS", {})  # a new process: the cache answers, no second probe
    saved[key]["bf16"] = True
    (tmp_path / "aelab" / "precision.json").write_text(json.dumps(saved))
    assert device.bf16_pays(cpu) is True and calls == [1]
    assert device.bf16_pays(torch.device("meta")) is True  # accelerators are trusted without a probe


def test_a_probe_timed_under_load_is_not_remembered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A verdict measured while other processes kept the cores busy decides this process only; the next one
    measures again. The key names the instruction set (AMX or not), which one VM model name does not."""
    from aelab import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(device, "_VERDICTS", {})
    calls: list[int] = []
    monkeypatch.setattr(device, "probe_precisions",
                        lambda: calls.append(1) or {"bf16": False, "others_busy_cores": 1.5})
    cpu = torch.device("cpu")
    assert device.bf16_pays(cpu) is False and calls == [1]
    assert not (tmp_path / "aelab" / "precision.json").exists()
    monkeypatch.setattr(device, "_VERDICTS", {})
    assert device.bf16_pays(cpu) is False and calls == [1, 1]  # measured again
    assert device.cpu_isa() in next(iter(device._VERDICTS))
    # the real reading: this process's own work is not counted as the others' load
    before = device._cpu_jiffies()
    sum(i * i for i in range(2_000_000))
    busy = device.others_busy(before, device._cpu_jiffies())
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1)


def test_resuming_in_another_precision_warns(one_batch: DataBundle, tmp_path: Path) -> None:
    cfg = resolve("seed-64", overrides=dict(threads=1, batch_size=32, epochs=2, patience=0, precision="fp32"))
    trainer = Trainer(cfg, Run(tmp_path), bundle=one_batch, progress=False)
    trainer._epoch()
    trainer._save(trainer.run.last, full=True)
    other = resolve("seed-64", overrides=dict(threads=1, batch_size=32, epochs=2, patience=0, precision="bf16"))
    with pytest.warns(UserWarning, match="trained in fp32 and continues in bf16"):
        Trainer(other, Run(tmp_path), bundle=one_batch, progress=False, resume=True)
