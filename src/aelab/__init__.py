"""aelab: autoencoders on Fashion-MNIST and MNIST.

The public Python API (imported lazily, so ``import aelab`` stays light):

- ``aelab.load(RUN)`` -> a trained model with ``encode`` / ``decode`` / ``reconstruct`` (see ``aelab.api``);
- ``aelab.AutoencoderReducer`` -> an autoencoder as a scikit-learn transformer (see ``aelab.estimator``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AutoencoderReducer", "TrainedModel", "load"]

if TYPE_CHECKING:
    from aelab.api import TrainedModel, load
    from aelab.estimator import AutoencoderReducer

_LAZY = {"load": "aelab.api", "TrainedModel": "aelab.api", "AutoencoderReducer": "aelab.estimator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
