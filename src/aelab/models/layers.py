"""Building blocks of the model families: the training convolution on CPU (ReLU inside), activations, norms."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aelab.models.registry import ACTIVATIONS

# oneDNN's convolution with a post-op, as torch registers it where it is built with oneDNN (x86 and most ARM wheels)
_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise")


class _ConvCPU(torch.autograd.Function):
    """A training convolution on CPU, transposed or not, with its ReLU computed inside the same oneDNN primitive.

    Two measured levers of issue 32 (benchmarks/README.md "Levers"), each exact to float rounding
    (tests/models/test_models.py):

    - transposed: the backward runs as the two regular convolutions a transposed convolution's gradient is made
      of (a strided convolution for the input, a weight gradient for the weights); torch 2.13's oneDNN
      deconvolution backward on CPU is ~2x slower than these two regular calls on the same tensors.
    - ``relu``: the forward is oneDNN's convolution with a ReLU post-op (``torch.ops.mkldnn._convolution_pointwise``
      and ``_convolution_transpose_pointwise``, what torch.compile's CPU backend calls; Keras fuses the same way),
      so the activation is not a second pass over the layer's output. The backward masks the gradient by the
      saved output (ReLU's own backward) and then runs the convolution's. The base model's step: 1.01x at fp32,
      1.07x at bf16 (2-core Xeon with AMX, median of 3 alternating rounds; a first try 1.03x and 1.11x). A torch
      build without oneDNN computes the same in two steps.

    Under bf16 autocast the inputs are cast as autocast would cast them, and each gradient is handed back in its
    input's dtype.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], output_padding: tuple[int, int] | None,
                relu: bool) -> torch.Tensor:
        dtypes = (x.dtype, weight.dtype)
        if torch.is_autocast_enabled("cpu"):
            dt = torch.get_autocast_dtype("cpu")
            x, weight, bias = x.to(dt), weight.to(dt), None if bias is None else bias.to(dt)
        transposed = output_padding is not None
        if not relu or not _POINTWISE:
            y = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding) if transposed else \
                F.conv2d(x, weight, bias, stride, padding)
            y = torch.relu_(y) if relu else y
        elif transposed:
            y = torch.ops.mkldnn._convolution_transpose_pointwise(
                x, weight, bias, list(padding), list(output_padding), list(stride), [1, 1], 1, "relu", [], "")
        else:
            y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), [1, 1], 1,
                                                         "relu", [], "")
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.geometry, ctx.transposed, ctx.dtypes = (stride, padding), transposed, dtypes
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, y = ctx.saved_tensors
        stride, padding = ctx.geometry
        xd, wd = ctx.dtypes
        grad = grad.to(x.dtype)
        if y is not None:
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        need_x = ctx.needs_input_grad[0]
        if ctx.transposed:
            grad_x = F.conv2d(grad, weight, None, stride, padding) if need_x else None
            grad_w = torch.ops.aten.convolution_backward(
                x, grad, weight, None, stride, padding, [1, 1], False, [0, 0], 1, [False, True, False])[1]
            grad_b = grad.sum((0, 2, 3)) if ctx.has_bias else None  # accumulates in fp32 inside
        else:
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, stride, padding, [1, 1], False,
                [0, 0], 1, [need_x, True, ctx.has_bias])
        return (None if grad_x is None else grad_x.to(xd), grad_w.to(wd),
                None if grad_b is None else grad_b.to(wd), None, None, None, None)


def _fast_cpu_path(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` trains through ``_ConvCPU`` on ``x``: training with gradients on CPU (eval mode, inference
    and export take torch's own path), a plain 2-D convolution in fp32 or bf16."""
    return (conv.training and torch.is_grad_enabled() and x.device.type == "cpu" and conv.groups == 1
            and conv.dilation == (1, 1) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.weight.dtype in (torch.float32, torch.bfloat16)
            and (x.dtype == conv.weight.dtype or torch.is_autocast_enabled("cpu")))


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters, same checkpoints) that trains ~2x faster on CPU (``_ConvCPU``)."""

    relu = False  # ConvTranspose2dReLU: the ReLU after it computed inside it

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and _fast_cpu_path(self, x):
            return _ConvCPU.apply(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.relu)
        y = super().forward(x, output_size)
        return F.relu(y) if self.relu else y


class ConvTranspose2dReLU(ConvTranspose2d):
    """``ConvTranspose2d`` then ReLU, one oneDNN primitive when training on CPU (``_ConvCPU``)."""

    relu = True


class Conv2dReLU(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same checkpoints) then ReLU, one oneDNN primitive when training on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_cpu_path(self, x):
            return _ConvCPU.apply(x, self.weight, self.bias, self.stride, self.padding, None, True)
        return F.relu(super().forward(x))


def conv_act(kind: type[nn.Conv2d] | type[ConvTranspose2d], cin: int, cout: int, activation: str,
             batch_norm: bool, **kwargs: Any) -> list[nn.Module]:
    """A convolution (``nn.Conv2d`` or aelab's ``ConvTranspose2d``), its batch norm if any and its activation.
    Directly followed by ReLU, the convolution computes the ReLU itself (``Conv2dReLU``, ``ConvTranspose2dReLU``)
    and an ``nn.Identity`` keeps the activation's place, so the layers keep their numbers (and checkpoints their
    keys)."""
    if batch_norm or activation != "relu":
        return [kind(cin, cout, **kwargs), *norm2d(cout, batch_norm), act(activation)]
    fused = ConvTranspose2dReLU if issubclass(kind, nn.ConvTranspose2d) else Conv2dReLU
    return [fused(cin, cout, **kwargs), nn.Identity()]


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
