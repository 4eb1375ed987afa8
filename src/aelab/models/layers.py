"""Building blocks shared by the model families: a faster transposed convolution, activations, norms."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aelab.models.registry import ACTIVATIONS


class _TransposedConvCPU(torch.autograd.Function):
    """conv_transpose2d whose backward runs as the two regular convolutions it is made of.

    The gradient of a transposed convolution is a strided convolution (input) and a convolution weight gradient
    (weights). torch 2.13's oneDNN deconvolution backward on CPU is ~2x slower than these two regular calls on
    the same tensors (benchmarks/README.md); the results agree to float rounding (tests/test_models.py).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], output_padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding)
        ctx.has_bias = bias is not None
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        dt = grad.dtype  # bf16 under autocast: compute in it, hand back each gradient in its input's dtype
        grad_x = F.conv2d(grad, weight.to(dt), None, stride, padding).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_w = torch.ops.aten.convolution_backward(
            x.to(dt), grad, weight.to(dt), None, stride, padding, [1, 1], False, [0, 0], 1, [False, True, False],
        )[1].to(weight.dtype)
        grad_b = grad.sum((0, 2, 3)).to(weight.dtype) if ctx.has_bias else None  # accumulates in fp32
        return grad_x, grad_w, grad_b, None, None, None


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters, same checkpoints) that trains ~2x faster on CPU."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and output_size is None
                and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"):
            return _TransposedConvCPU.apply(x, self.weight, self.bias, self.stride, self.padding,
                                            self.output_padding)
        return super().forward(x, output_size)


class Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


# Activations that never decrease commute with max pooling: pool(act(x)) == act(pool(x)) exactly, gradients
# included. For these the base model pools first and activates a quarter of the values (same function, less work).
MONOTONE = {"relu", "leaky_relu", "elu", "tanh"}


def act_pool(name: str) -> list[nn.Module]:
    return [nn.MaxPool2d(2), act(name)] if name in MONOTONE else [act(name), nn.MaxPool2d(2)]


def norm2d(c: int, on: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(c)] if on else []


def norm1d(c: int, on: bool) -> list[nn.Module]:
    return [nn.BatchNorm1d(c)] if on else []


def drop(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def channels(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


# ------------------------------------------------------------------------------------------ image shapes
DEFAULT_SHAPE = (1, 28, 28)  # (C, H, W) of the built-in data sets; a model without a recorded shape takes these


def image_shape(shape: Any) -> tuple[int, int, int]:
    """(C, H, W) of ``shape`` (a sequence of three ints), or the default (1, 28, 28) for None."""
    if shape is None:
        return DEFAULT_SHAPE
    c, h, w = (int(v) for v in shape)
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"image shape {tuple(shape)} has an empty axis")
    return c, h, w


def shape_hparams(shape: tuple[int, int, int]) -> dict[str, Any]:
    """The hparams entry of an image shape: nothing for the default (old checkpoints and new ones of the built-in
    data sets stay alike), else ``shape`` as a list (what JSON gives back)."""
    return {} if shape == DEFAULT_SHAPE else {"shape": list(shape)}


class PadTo(nn.Module):
    """Zero-pads (n, C, h, w) at the bottom and right to (n, C, H, W): the size a down-sampling path divides."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, self.width - x.shape[-1], 0, self.height - x.shape[-2]))


class CropTo(nn.Module):
    """Keeps the top-left (H, W) of (n, C, h, w): undoes ``PadTo`` on the decoder's output."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :self.height, :self.width]


def padded(shape: tuple[int, int, int], factor: int) -> tuple[int, int]:
    """(H, W) of ``shape`` rounded up to multiples of ``factor`` (what a path that halves log2(factor) times takes)."""
    _, h, w = shape
    return -(-h // factor) * factor, -(-w // factor) * factor


def padding_note_of(model: nn.Module) -> str | None:
    """What ``model`` does to its images when its down-sampling path does not divide their sides (it zero-pads
    them and crops its output back: ``PadTo``, ``CropTo``), in words; None when it takes them as they are."""
    pad = next((m for m in model.modules() if isinstance(m, PadTo)), None)
    crop = next((m for m in model.modules() if isinstance(m, CropTo)), None)
    if pad is None or crop is None:
        return None
    name = dict(getattr(model, "hparams", {})).get("model", "the model")
    return (f"{name} pads {crop.height}x{crop.width} images with zeros to {pad.height}x{pad.width} (bottom and "
            f"right: its path halves them to a whole number of pixels) and crops the output back to "
            f"{crop.height}x{crop.width}")
