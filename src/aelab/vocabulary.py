"""The model vocabulary: every name an option may give a model, defined once, by the models, without torch.

``aelab.models`` owns these facts: its registry accepts only the families listed here (``register`` refuses any
other name) and builds its activations from ``ACTIVATION_NAMES``; the VAE family's likelihoods and the latent
range of ``build_model`` are these. The configuration (``aelab.config``) reads them to check options. They live
in this module, outside the ``aelab.models`` package, because importing anything inside that package runs its
``__init__``, which imports torch, and the CLI imports the configuration at start (``aelab --help`` stays
light); this module imports nothing, and sits in a layer of its own below config (pyproject.toml).

A new model family is its module in ``aelab/models/`` (``@register(NAME, help)``, imported by
``aelab/models/__init__.py``) and one line in ``FAMILIES`` here: its name and whether it is variational.
"""

from __future__ import annotations

# name -> variational (trained on the negative ELBO, with a prior to sample from, not on --loss; docs/vae.md)
FAMILIES: dict[str, bool] = {
    "dense": False,
    "conv": False,
    "conv-modified": False,
    "vae": True,
    "vae-dense": True,
    "resnet": False,
    "resnet-vae": True,
}
MODEL_NAMES: tuple[str, ...] = tuple(FAMILIES)
VAE_MODELS: tuple[str, ...] = tuple(name for name, variational in FAMILIES.items() if variational)
ACTIVATION_NAMES: tuple[str, ...] = ("relu", "leaky_relu", "elu", "gelu", "tanh", "silu")
# The families that grow with the image (their depth follows its size: --levels, --blocks); the others are built
# for images of about 28x28.
SCALING_MODELS: tuple[str, ...] = ("resnet", "resnet-vae")
# Each family's own activation (its builder's default), where --activation is not given; relu for the others.
OWN_ACTIVATIONS: dict[str, str] = {"resnet": "silu", "resnet-vae": "silu"}


def own_activation(model: str) -> str:
    """The activation ``model`` uses when none is chosen: its builder's default (checked by the tests)."""
    return OWN_ACTIVATIONS.get(model, "relu")
LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian")  # a VAE's p(x|z): BCE, or MSE with a standard deviation
LATENT_RANGE: tuple[int, int] = (1, 1024)
