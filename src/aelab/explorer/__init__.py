"""The latent explorer: a local web app to walk through what a trained model learned (``aelab explore RUN``)."""

from aelab.explorer.app import create_app, serve

__all__ = ["create_app", "serve"]
