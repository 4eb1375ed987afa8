"""Fast inference: a folded, channels-last, gradient-free copy of a model, and the batch size to run it at."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from aelab.models.registry import Autoencoder

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
