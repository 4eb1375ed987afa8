"""benchmarks/bench_levers.py turns aelab's shipped levers off to measure them: undoing the ReLU inside the base
model's convolutions gives back the plain layers (same parameters, same function), and bad options are one line.
No timing here (the measurement itself is a benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from aelab.models import build_model
from aelab.models.layers import Conv2dReLU, ConvTranspose2dReLU

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def levers():
    saved = list(sys.path)  # the module puts benchmarks/ on sys.path for its siblings: not for the other tests
    spec = importlib.util.spec_from_file_location("bench_levers", BENCH / "bench_levers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path[:] = saved
    return module


def test_unfusing_gives_back_the_plain_layers_with_the_same_function(levers, data_root) -> None:
    from aelab.data import load_raw

    (x, _, _, _), _ = load_raw("fashion-mnist", data_dir=data_root)
    torch.manual_seed(0)
    model = build_model("conv", 16).to(memory_format=torch.channels_last)
    images = torch.from_numpy(x[:16].copy())  # real Fashion-MNIST images
    assert levers.check_unfused(model, images) < 1e-5  # fused and plain: the same outputs and gradients
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert levers.unfuse_conv_relu(model) == 3
    assert not any(isinstance(m, Conv2dReLU | ConvTranspose2dReLU) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 6  # 3 before + the 3 put back
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert levers.unfuse_conv_relu(model) == 0
    with pytest.raises(RuntimeError, match="nothing to compare"):
        levers.check_unfused(model, images)


@pytest.mark.parametrize("argv, message", [
    (["--levers", "turbo"], "choose from malloc"),
    (["--precisions", "fp16"], "fp32, bf16 or both"),
    (["--rounds", "0"], "--rounds 0: use 1 or more"),
])
def test_bad_options_are_one_line_with_exit_code_2(levers, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as stop:
        levers.parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
