"""The autoencoders: a registry of named architectures behind one interface, and the PCA baseline.

Every model takes images as float tensors (n, 1, 28, 28) in [0, 1] and offers ``encode(x) -> z``,
``decode(z) -> logits`` and ``forward(x) -> logits``; ``torch.sigmoid(logits)`` gives pixels.
``build_model(name, **hparams)`` makes one; ``model.hparams`` rebuilds it from a checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}
LATENT_RANGE = (1, 1024)


class Autoencoder(nn.Module):
    """An encoder and a decoder; ``hparams`` holds what ``build_model`` needs to make it again."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, hparams: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.hparams = dict(hparams)

    @property
    def latent(self) -> int:
        return int(self.hparams["latent"])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


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


MODELS: dict[str, Callable[..., Autoencoder]] = {}
MODEL_HELP: dict[str, str] = {}


def register(name: str, help: str) -> Callable[[Callable[..., Autoencoder]], Callable[..., Autoencoder]]:
    def deco(fn: Callable[..., Autoencoder]) -> Callable[..., Autoencoder]:
        MODELS[name] = fn
        MODEL_HELP[name] = help
        return fn
    return deco


def _act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


# Activations that never decrease commute with max pooling: pool(act(x)) == act(pool(x)) exactly, gradients
# included. For these the base model pools first and activates a quarter of the values (same function, less work).
MONOTONE = {"relu", "leaky_relu", "elu", "tanh"}


def _act_pool(name: str) -> list[nn.Module]:
    return [nn.MaxPool2d(2), _act(name)] if name in MONOTONE else [_act(name), nn.MaxPool2d(2)]


def _norm2d(c: int, on: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(c)] if on else []


def _norm1d(c: int, on: bool) -> list[nn.Module]:
    return [nn.BatchNorm1d(c)] if on else []


def _drop(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def _ch(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


@register("dense", "fully connected 784-512-256-latent, mirrored")
def dense(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
          batch_norm: bool = False) -> Autoencoder:
    h1, h2 = _ch(512, width), _ch(256, width)
    enc = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, h1), *_norm1d(h1, batch_norm), _act(activation), *_drop(dropout),
        nn.Linear(h1, h2), *_norm1d(h2, batch_norm), _act(activation), *_drop(dropout),
        nn.Linear(h2, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, h2), *_norm1d(h2, batch_norm), _act(activation), *_drop(dropout),
        nn.Linear(h2, h1), *_norm1d(h1, batch_norm), _act(activation), *_drop(dropout),
        nn.Linear(h1, 784), Reshape(1, 28, 28),
    )
    return Autoencoder(enc, dec, dict(model="dense", latent=latent, width=width, activation=activation,
                                      dropout=dropout, batch_norm=batch_norm))


@register("conv", "the base model: conv 32-pool-conv 64-pool-conv 128-dense, mirrored with transposed convs")
def conv(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.0,
         batch_norm: bool = False) -> Autoencoder:
    c1, c2, c3 = _ch(32, width), _ch(64, width), _ch(128, width)
    enc = nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), *_norm2d(c1, batch_norm), *_act_pool(activation),   # 14
        nn.Conv2d(c1, c2, 3, padding=1), *_norm2d(c2, batch_norm), *_act_pool(activation),  # 7
        nn.Conv2d(c2, c3, 3, padding=1), *_norm2d(c3, batch_norm), _act(activation),
        nn.Flatten(), *_drop(dropout), nn.Linear(c3 * 49, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, c3 * 49), _act(activation), *_drop(dropout), Reshape(c3, 7, 7),
        ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1),                          # 14
        *_norm2d(c2, batch_norm), _act(activation),
        ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),                          # 28
        *_norm2d(c1, batch_norm), _act(activation),
        nn.Conv2d(c1, 1, 3, padding=1),
    )
    return Autoencoder(enc, dec, dict(model="conv", latent=latent, width=width, activation=activation,
                                      dropout=dropout, batch_norm=batch_norm))


@register("conv-modified", "batch norm, dropout, strided 28-14-7 path and transposed convs")
def conv_modified(latent: int, width: float = 1.0, activation: str = "relu", dropout: float = 0.1,
                  batch_norm: bool = True) -> Autoencoder:
    c1, c2, c3 = _ch(32, width), _ch(64, width), _ch(128, width)

    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm),
                *_norm2d(cout, batch_norm), _act(activation)]

    def up(cin: int, cout: int) -> list[nn.Module]:
        return [ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=not batch_norm),
                *_norm2d(cout, batch_norm), _act(activation)]

    enc = nn.Sequential(
        *block(1, c1), *block(c1, c1, 2),        # 28 -> 14
        *block(c1, c2), *block(c2, c2, 2),       # 14 -> 7
        *block(c2, c3),
        nn.Flatten(), *_drop(dropout), nn.Linear(c3 * 49, latent),
    )
    dec = nn.Sequential(
        nn.Linear(latent, c3 * 49), *_norm1d(c3 * 49, batch_norm), _act(activation), Reshape(c3, 7, 7),
        *block(c3, c2), *up(c2, c2),             # 7 -> 14
        *block(c2, c1), *up(c1, c1),             # 14 -> 28
        nn.Conv2d(c1, 1, 3, padding=1),
    )
    return Autoencoder(enc, dec, dict(model="conv-modified", latent=latent, width=width,
                                      activation=activation, dropout=dropout, batch_norm=batch_norm))


def build_model(name: str, latent: int, **kwargs: Any) -> Autoencoder:
    """Make the registered model ``name``; unknown names and bad values raise ``ConfigError``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} (or pca for the baseline)")
    if not isinstance(latent, int) or not LATENT_RANGE[0] <= latent <= LATENT_RANGE[1]:
        raise ConfigError(f"latent size {latent} is out of range; use --latent between {LATENT_RANGE[0]} and "
                          f"{LATENT_RANGE[1]}")
    act = kwargs.get("activation", "relu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {act!r}; choose one of: {', '.join(ACTIVATIONS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return MODELS[name](latent=latent, **kwargs)


# Images per forward pass at inference. On 2 CPU cores conv-modified's encoder runs ~15,000 images/s in batches
# of 128-256 but ~7,700 in batches of 2,000 (the activations of a big batch fall out of the caches).
INFERENCE_BATCH = 256


def inference_batch(device: torch.device) -> int:
    """Images per forward pass at inference on ``device``: 256 on a CPU (see above), 4,096 on a GPU."""
    return INFERENCE_BATCH if device.type == "cpu" else 4096


def inference_copy(model: Autoencoder) -> Autoencoder:
    """A copy of ``model`` for fast inference: eval mode, no gradients, each batch norm folded into the
    convolution or linear layer before it, and channels-last memory for convolutional models.

    It computes the same function as ``model.eval()`` up to float rounding (~1e-6 relative); ONNX Runtime and
    TensorFlow fold batch norm the same way. On 2 CPU cores it encodes ~2x faster than the plain eval model.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    fast = copy.deepcopy(model).eval()
    for seq in (fast.encoder, fast.decoder):
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(1, len(seq)):
            layer, norm = seq[i - 1], seq[i]
            if isinstance(norm, nn.BatchNorm2d) and isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                seq[i - 1] = fuse_conv_bn_eval(layer, norm, transpose=isinstance(layer, nn.ConvTranspose2d))
                seq[i] = nn.Identity()
            elif isinstance(norm, nn.BatchNorm1d) and isinstance(layer, nn.Linear):
                seq[i - 1] = fuse_linear_bn_eval(layer, norm)
                seq[i] = nn.Identity()
    if is_convolutional(fast):
        fast.to(memory_format=torch.channels_last)
    fast.requires_grad_(False)
    return fast


def is_convolutional(model: nn.Module) -> bool:
    """True when ``model`` has 2-D convolutions (it then runs fastest on channels-last tensors)."""
    return any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class PCAModel:
    """The PCA baseline with the autoencoders' interface (scikit-learn PCA, fitted on flattened pixels).

    ``decode`` returns pixels (clipped to [0, 1]), not logits: PCA has no sigmoid.
    """

    def __init__(self, latent: int):
        from sklearn.decomposition import PCA

        self.latent = latent
        self.pca = PCA(n_components=latent, svd_solver="covariance_eigh")

    def fit(self, images: torch.Tensor) -> PCAModel:
        """``images``: uint8 (n, 28, 28) or float (n, 1, 28, 28) in [0, 1]."""
        self.pca.fit(self._flat(images))
        return self

    @staticmethod
    def _flat(images: torch.Tensor) -> np.ndarray:
        x = images.reshape(images.shape[0], -1)
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        return x.numpy()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.pca.transform(self._flat(images)).astype(np.float32))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.pca.inverse_transform(codes.numpy().astype(np.float32))
        return torch.from_numpy(np.clip(x, 0.0, 1.0).astype(np.float32)).reshape(-1, 1, 28, 28)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def state(self) -> dict[str, torch.Tensor]:
        return {"components": torch.from_numpy(self.pca.components_.astype(np.float32)),
                "mean": torch.from_numpy(self.pca.mean_.astype(np.float32)),
                "explained_variance": torch.from_numpy(self.pca.explained_variance_.astype(np.float32))}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> PCAModel:
        comps = state["components"].numpy()
        model = cls(comps.shape[0])
        p = model.pca
        p.components_ = comps
        p.mean_ = state["mean"].numpy()
        p.explained_variance_ = state["explained_variance"].numpy()
        p.n_components_ = comps.shape[0]
        p.n_features_in_ = comps.shape[1]
        p.whiten = False
        return model
