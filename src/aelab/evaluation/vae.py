"""A VAE's own numbers on the test split: ELBO and its two terms, the IWAE bound, KL per dimension, active units.

All in nats per image (sums over the 784 pixels and the latent dimensions, averaged over test images):

- ``elbo`` = ``reconstruction`` - ``kl`` on every test image: ``reconstruction`` is log p(x|z) for one
  posterior sample z per image (a Monte-Carlo estimate of E_q[log p(x|z)]); ``kl`` is KL(q(z|x) || N(0, I)) in
  closed form.
- ``iwae``: log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), the importance-weighted bound of Burda et al.
  (2016), a lower bound on log p(x) never looser than the ELBO in expectation and tighter as k grows; on a fixed,
  seeded sample of ``iwae_images`` test images (each decoded k times: all 10,000 at k = 100 would take minutes on
  2 cores), beside ``iwae_elbo``, the ELBO of the same images from the same k samples.
- ``kl_per_dim``: the mean KL of each latent dimension; ``active_units``: dimensions whose posterior mean varies
  over the test images, Var_x(E_q[z_j]) > 0.01 (the definition of Burda et al. 2016).
- ``binarized`` (MNIST with the Bernoulli likelihood only): the same bounds on the test images binarised once by
  sampling each pixel from Bernoulli(grey level) with a fixed seed, the protocol of the published MNIST
  likelihoods (docs/vae.md says which figure to set it beside).

For the Bernoulli likelihood on grey images the "log-likelihood" is a negative cross-entropy, not the
log-probability of an image; for the Gaussian likelihood it is a density over [0, 1]^784 (it may be positive).
Neither is comparable with published figures, which need binary images: that is what ``binarized`` is for.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from aelab.config import RunConfig
from aelab.data import to_float
from aelab.errors import RunError
from aelab.models import VAE, inference_batch, inference_copy, is_convolutional, kl_per_dim
from aelab.runs import Run

IWAE_K = 100           # importance samples per image by default
IWAE_IMAGES = 1000     # test images (a fixed, seeded sample) the IWAE bound is computed on by default; 0: all
IWAE_DECODES = 2048    # decoder images per forward pass in the IWAE (bounds the memory for any k)
ACTIVE_THRESHOLD = 0.01
BINARIZE_SEED = 0
SUBSET_SEED = 0


def _batches(model: VAE, images: torch.Tensor, batch: int, binarize: bool) -> Iterator[tuple[VAE, torch.Tensor]]:
    """(fast inference copy, float batch on the model's device) over uint8 ``images`` (n, 28, 28); binarised
    once per pixel from Bernoulli(grey level) with ``BINARIZE_SEED`` when asked."""
    fast = inference_copy(model)
    device = next(model.parameters()).device
    layout = torch.channels_last if is_convolutional(fast) else torch.contiguous_format
    g_bin = torch.Generator().manual_seed(BINARIZE_SEED)
    for i in range(0, len(images), batch):
        x = to_float(images[i:i + batch])
        if binarize:
            x = torch.bernoulli(x, generator=g_bin)
        yield fast, x.to(device).contiguous(memory_format=layout)


def elbo_passes(model: VAE, images: torch.Tensor, seed: int = 0, binarize: bool = False
                ) -> dict[str, np.ndarray]:
    """Per image: ``recon`` log p(x|z) for one posterior sample z, ``kl`` (n, latent) in closed form, ``mean``
    (n, latent) the posterior mean; float64 arrays."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {"recon": [], "kl": [], "mean": []}
    with torch.inference_mode():
        for fast, x in _batches(model, images, inference_batch(device), binarize):
            mean, logvar = fast.posterior(x)
            z = fast.sample_posterior(mean.float(), logvar.float(), generator=g)
            out["recon"].append(fast.log_likelihood(fast.decode(z), x).cpu())
            out["kl"].append(kl_per_dim(mean.float(), logvar.float()).cpu())
            out["mean"].append(mean.float().cpu())
    return {key: torch.cat(v).numpy().astype(np.float64) for key, v in out.items()}


def iwae_passes(model: VAE, images: torch.Tensor, k: int = IWAE_K, seed: int = 0, binarize: bool = False
                ) -> dict[str, np.ndarray]:
    """Per image, from the same ``k`` posterior samples: ``iwae`` the IWAE bound, ``elbo`` the k-sample ELBO
    (mean log p(x|z_i) minus the KL in closed form), ``elbo_mc`` the mean log weight (the ELBO with the KL
    estimated from the same samples: IWAE >= elbo_mc holds for every image, by Jensen's inequality)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    batch = max(1, min(inference_batch(device), IWAE_DECODES // k))
    out: dict[str, list[torch.Tensor]] = {"iwae": [], "elbo": [], "elbo_mc": []}
    with torch.inference_mode():
        for fast, x in _batches(model, images, batch, binarize):
            mean, logvar = fast.posterior(x)
            w, ll = fast.log_weights(x, k, generator=g, decode_batch=IWAE_DECODES)
            out["iwae"].append((torch.logsumexp(w, 1) - math.log(k)).cpu())
            out["elbo"].append((ll.mean(1) - kl_per_dim(mean.float(), logvar.float()).sum(1)).cpu())
            out["elbo_mc"].append(w.mean(1).cpu())
    return {key: torch.cat(v).numpy().astype(np.float64) for key, v in out.items()}


def iwae_sample(n: int, images: int) -> np.ndarray:
    """The sorted indices of the ``images`` test images (0: all) the IWAE bound is computed on: a fixed sample
    (``SUBSET_SEED``), the same whatever the estimator's seed, so that two seeds differ by the estimator only."""
    if images <= 0 or images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:images])


def _bounds(model: VAE, images: torch.Tensor, k: int, iwae_images: int, seed: int, binarize: bool
            ) -> dict[str, Any]:
    e = elbo_passes(model, images, seed, binarize)
    idx = iwae_sample(len(images), iwae_images)
    w = iwae_passes(model, images[torch.from_numpy(idx)], k, seed, binarize)
    kl_image = e["kl"].sum(1)
    return {"elbo": float(np.mean(e["recon"] - kl_image)), "reconstruction": float(np.mean(e["recon"])),
            "kl": float(np.mean(kl_image)), "iwae": float(np.mean(w["iwae"])),
            "iwae_elbo": float(np.mean(w["elbo"])), "iwae_k": k, "iwae_images": len(idx),
            "_kl": e["kl"], "_mean": e["mean"]}


def vae_metrics(model: VAE, images: torch.Tensor, dataset: str, k: int = IWAE_K, seed: int = 0,
                iwae_images: int = IWAE_IMAGES) -> dict[str, Any]:
    """The ``vae`` section of metrics.json for the uint8 test images ``images`` (see the module docstring)."""
    t0 = time.perf_counter()
    b = _bounds(model, images, k, iwae_images, seed, binarize=False)
    kl_dims, means = b.pop("_kl").mean(0), b.pop("_mean")
    mean_var = means.var(0) if len(means) > 1 else np.zeros(model.latent)
    out: dict[str, Any] = {
        "units": "nats per image",
        "likelihood": model.likelihood,
        "sigma": model.pixel_sigma(),
        **b,
        "seed": seed,
        "images": len(images),
        "kl_per_dim": [round(float(v), 5) for v in kl_dims],
        "posterior_mean_variance": [round(float(v), 5) for v in mean_var],
        "active_units": int((mean_var > ACTIVE_THRESHOLD).sum()),
        "active_threshold": ACTIVE_THRESHOLD,
    }
    if dataset == "mnist" and model.likelihood == "bernoulli":
        binar = _bounds(model, images, k, iwae_images, seed, binarize=True)
        out["binarized"] = {key: v for key, v in binar.items() if not key.startswith("_")} | {
            "binarize_seed": BINARIZE_SEED}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def plain_section(path: str | os.PathLike, cfg: RunConfig, test_images: int) -> dict[str, Any]:
    """The overall test metrics of a plain autoencoder's run folder, to show beside a VAE run's; its data set and
    test split must be the VAE run's (``RunError`` otherwise)."""
    plain = Run.open(path)
    other = plain.config()
    m = plain.load_metrics()
    if other.dataset != cfg.dataset or m.get("split", {}).get("test") != test_images:
        raise RunError(f"{plain.path} was evaluated on another test split ({other.dataset}, "
                       f"{m.get('split', {}).get('test')} images) than this run ({cfg.dataset}, {test_images}); give "
                       f"a run of the same data set")
    if "autoencoder" not in m or "overall" not in m["autoencoder"]:
        raise RunError(f"{plain.metrics} lacks the autoencoder's metrics; rebuild it with 'aelab evaluate "
                       f"{plain.path}'")
    return {"run": plain.path.name, "path": str(plain.path), "model": other.model, "latent": other.latent,
            "loss": other.objective(), "overall": m["autoencoder"]["overall"]}
