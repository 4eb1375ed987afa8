"""aelab: autoencoders on Fashion-MNIST and MNIST."""
__version__ = "0.1.0"
