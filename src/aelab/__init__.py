"""aelab: autoencoders on Fashion-MNIST and MNIST.

The public Python API (imported lazily, so ``import aelab`` stays light):

- ``aelab.load(RUN)`` -> a trained model with ``encode`` / ``decode`` / ``reconstruct`` (see ``aelab.use.api``);
- ``aelab.AutoencoderReducer`` -> an autoencoder as a scikit-learn transformer (see ``aelab.use.estimator``).

The layout, the layer rules and where each thing lives: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aelab._version import __version__

__all__ = ["AutoencoderReducer", "TrainedModel", "__version__", "load"]

if TYPE_CHECKING:
    from aelab.use.api import TrainedModel, load
    from aelab.use.estimator import AutoencoderReducer

# Imported on first use: ``import aelab`` (and so the CLI's start-up) stays free of torch.
_LAZY = {"load": "aelab.use.api", "TrainedModel": "aelab.use.api", "AutoencoderReducer": "aelab.use.estimator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
