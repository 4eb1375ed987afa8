"""Models: the registry and its interface, one file per family (dense, conv, vae, resnet), fast inference, PCA.

``build_model(name, latent, **hparams)`` makes any registered model; importing this package registers every
family.
"""

from aelab.models import conv, dense, resnet, vae  # noqa: F401 - importing a family registers it
from aelab.models.conv import padding_note
from aelab.models.inference import INFERENCE_BATCH, count_parameters, inference_batch, inference_copy, is_convolutional
from aelab.models.layers import ConvTranspose2d, padding_note_of
from aelab.models.pca import PCAModel
from aelab.models.registry import ACTIVATIONS, LATENT_RANGE, MODEL_HELP, MODELS, Autoencoder, build_model, register
from aelab.models.vae import VAE, VAEOutput, kl_per_dim, prior_codes, prior_quantiles

__all__ = ["ACTIVATIONS", "INFERENCE_BATCH", "LATENT_RANGE", "MODELS", "MODEL_HELP", "Autoencoder", "ConvTranspose2d",
           "PCAModel", "build_model", "count_parameters", "inference_batch", "inference_copy", "is_convolutional",
           "padding_note", "padding_note_of", "register", "VAE", "VAEOutput", "kl_per_dim", "prior_codes",
           "prior_quantiles"]
