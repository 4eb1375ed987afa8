"""The model registry and the one interface every autoencoder has (``encode``, ``decode``, ``forward``).

Every model takes images as float tensors (n, C, H, W) in [0, 1] ((n, 1, 28, 28) for the built-in data sets;
``model.image_shape``) and offers ``encode(x) -> z``, ``decode(z) -> logits`` and ``forward(x) -> logits``;
``torch.sigmoid(logits)`` gives pixels. ``build_model(name, latent, shape=(C, H, W), **hparams)`` makes a
registered one (timm's ``create_model`` pattern); ``model.hparams`` rebuilds it from a checkpoint (``shape`` is
kept there only when it is not the default (1, 28, 28), so older checkpoints load as they are).
A new family is one file that calls ``@register``, imported by ``aelab/models/__init__.py``, and its line in
``aelab.vocabulary.FAMILIES`` (the names the configuration accepts, read without torch): ``register`` refuses a
name not listed there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.vocabulary import ACTIVATION_NAMES, FAMILIES, LATENT_RANGE

_MAKERS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": lambda: nn.SiLU(inplace=True),
}
# The vocabulary's activations, in its order: a name there without a module here fails at import.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {name: _MAKERS[name] for name in ACTIVATION_NAMES}
__all__ = ["ACTIVATIONS", "LATENT_RANGE", "MODELS", "MODEL_HELP", "Autoencoder", "build_model", "register"]


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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes: (1, 28, 28) unless its hparams say otherwise."""
        c, h, w = self.hparams.get("shape") or (1, 28, 28)
        return int(c), int(h), int(w)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


MODELS: dict[str, Callable[..., Autoencoder]] = {}
MODEL_HELP: dict[str, str] = {}


def register(name: str, help: str) -> Callable[[Callable[..., Autoencoder]], Callable[..., Autoencoder]]:
    """Register a model family under ``name``, which ``aelab.vocabulary.FAMILIES`` must list (the configuration
    accepts only the names there, and reads there whether a family is variational)."""
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r} is not in aelab.vocabulary.FAMILIES; add it there (its name and "
                         f"whether it is variational) so that the configuration accepts it")

    def deco(fn: Callable[..., Autoencoder]) -> Callable[..., Autoencoder]:
        MODELS[name] = fn
        MODEL_HELP[name] = help
        return fn
    return deco


def build_model(name: str, latent: int, **kwargs: Any) -> Autoencoder:
    """Make the registered model ``name``; unknown names and bad values raise ``ConfigError``. A keyword given as
    None takes the family's own default (``activation``, ``dropout``, ``batch_norm``, ``levels``, ...)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} (or pca for the baseline)")
    if not isinstance(latent, int) or not LATENT_RANGE[0] <= latent <= LATENT_RANGE[1]:
        raise ConfigError(f"latent size {latent} is out of range; use --latent between {LATENT_RANGE[0]} and "
                          f"{LATENT_RANGE[1]}")
    act = kwargs.get("activation")  # None: the family's own (relu, silu for the resnet models)
    if act is not None and act not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {act!r}; choose one of: {', '.join(ACTIVATIONS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return MODELS[name](latent=latent, **kwargs)
