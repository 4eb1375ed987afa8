"""The named recipes of ``aelab train --preset NAME``: each a set of options over the defaults.

A preset that names its model chose it: the run trains that model whatever the data (with a warning when the
images are too large for it); the defaults of the model's own (dropout, batch norm, activation) stay the
model's unless the preset sets them.
"""

from __future__ import annotations

from typing import Any

from aelab.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # The 10-minute recipe (docs/study/NOTES.md, session 9): batch 64 and lr 5e-3 / dropout 0.05 learn more per
    # epoch at the same cost per image (4 epochs, latent 64: test SSIM 0.8733 -> 0.8801, PSNR 23.71 -> 24.00 dB);
    # the epoch cap of 30 lets the schedule fit as many epochs as 10 minutes hold (18 in bf16 on an AMX Xeon).
    # It was measured on conv-modified, which it names.
    "default": dict(model="conv-modified", max_minutes=10.0, batch_size=64, lr=5e-3, dropout=0.05, epochs=30),
    "seed-2d": dict(model="conv", latent=2, loss="bce", optimizer="rmsprop", lr=1e-3, weight_decay=0.0,
                    schedule="constant", batch_size=256, epochs=20, dataset="fashion-mnist"),
    "seed-64": dict(model="conv", latent=64, loss="bce", optimizer="adam", lr=1e-3, weight_decay=0.0,
                    schedule="constant", batch_size=256, epochs=10),
    "seed-128": dict(model="conv-modified", latent=128),
    "seed-256": dict(model="conv-modified", latent=256),
    "mnist-dense-2d": dict(dataset="mnist", model="dense", latent=2, loss="mse", optimizer="adam", lr=1e-3,
                           weight_decay=0.0, schedule="cosine", batch_size=256, epochs=60),
    # VAEs (docs/vae.md): the default recipe's optimizer and schedule, a Gaussian likelihood with a learned sigma
    "seed-vae-2d": dict(model="vae", latent=2, likelihood="gaussian", kl_warmup=2.0, epochs=12,
                        dataset="fashion-mnist"),
    "mnist-vae-2d": dict(model="vae", latent=2, likelihood="gaussian", kl_warmup=2.0, epochs=12, dataset="mnist"),
}
PRESET_HELP = {
    "default": "the measured default recipe (conv-modified, latent 64, MSE+0.1(1-SSIM), AdamW lr 5e-3, dropout "
               "0.05, batch 64, one-cycle over as many epochs as fit in 10 minutes, at most 30)",
    "seed-2d": "conv, latent 2, BCE, RMSprop, Fashion-MNIST (for latent-space plots)",
    "seed-64": "the base conv model at latent 64 as published examples train it (BCE, Adam, batch 256)",
    "seed-128": "dimension reduction: conv-modified at latent 128",
    "seed-256": "dimension reduction: conv-modified at latent 256",
    "mnist-dense-2d": "dense, MNIST, latent 2, MSE, 60 epochs (~4 minutes on 2 cores)",
    "seed-vae-2d": "VAE (conv-modified backbone), latent 2, Gaussian likelihood (learned sigma), 2-epoch KL "
                   "warm-up, Fashion-MNIST: the 2-D prior manifold to look at",
    "mnist-vae-2d": "the same VAE on MNIST",
}


def preset(name: str) -> dict[str, Any]:
    """The options of the preset ``name`` (a copy); an unknown name raises ``ConfigError`` listing them."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
