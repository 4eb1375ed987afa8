"""The latent explorer: a local web app to walk through what a trained model learned (``aelab explore RUN``)."""
