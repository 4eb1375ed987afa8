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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aelab.config import RunConfig
from aelab.data import to_float
from aelab.errors import RunError
from aelab.evaluation.passes import BatchedInference
from aelab.models import VAE, kl_per_dim
from aelab.runs import Run

IWAE_K = 100           # importance samples per image by default
IWAE_IMAGES = 1000     # test images (a fixed, seeded sample) the IWAE bound is computed on by default; 0: all
IWAE_DECODES = 2048    # decoder images per forward pass in the IWAE (bounds the memory for any k)
ACTIVE_THRESHOLD = 0.01
BINARIZE_SEED = 0
SUBSET_SEED = 0


def _binarizer(binarize: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What ``BatchedInference.map`` applies to each uint8 batch when asked to binarise: the pixels drawn once from
    Bernoulli(grey level) on the CPU, in order, from one generator seeded with ``BINARIZE_SEED``."""
    if not binarize:
        return None
    g_bin = torch.Generator().manual_seed(BINARIZE_SEED)
    return lambda u8: torch.bernoulli(to_float(u8), generator=g_bin)


def elbo_passes(model: VAE, images: torch.Tensor, seed: int = 0, binarize: bool = False
                ) -> dict[str, np.ndarray]:
    """Per image: ``recon`` log p(x|z) for one posterior sample z, ``kl`` (n, latent) in closed form, ``mean``
    (n, latent) the posterior mean; float64 arrays."""
    run = BatchedInference(model)
    g = torch.Generator(device=run.device).manual_seed(seed)

    def one(fast: VAE, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean, logvar = fast.posterior(x)
        z = fast.sample_posterior(mean.float(), logvar.float(), generator=g)
        return (fast.log_likelihood(fast.decode(z), x).cpu(), kl_per_dim(mean.float(), logvar.float()).cpu(),
                mean.float().cpu())
    return _gather(("recon", "kl", "mean"), run.map(images, one, prepare=_binarizer(binarize)))


def iwae_passes(model: VAE, images: torch.Tensor, k: int = IWAE_K, seed: int = 0, binarize: bool = False
                ) -> dict[str, np.ndarray]:
    """Per image, from the same ``k`` posterior samples: ``iwae`` the IWAE bound, ``elbo`` the k-sample ELBO
    (mean log p(x|z_i) minus the KL in closed form), ``elbo_mc`` the mean log weight (the ELBO with the KL
    estimated from the same samples: IWAE >= elbo_mc holds for every image, by Jensen's inequality)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    run = BatchedInference(model)
    g = torch.Generator(device=run.device).manual_seed(seed)

    def one(fast: VAE, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean, logvar = fast.posterior(x)
        w, ll = fast.log_weights(x, k, generator=g, decode_batch=IWAE_DECODES)
        return ((torch.logsumexp(w, 1) - math.log(k)).cpu(),
                (ll.mean(1) - kl_per_dim(mean.float(), logvar.float()).sum(1)).cpu(), w.mean(1).cpu())
    batch = max(1, min(run.batch, IWAE_DECODES // k))
    return _gather(("iwae", "elbo", "elbo_mc"), run.map(images, one, batch=batch, prepare=_binarizer(binarize)))


def _gather(keys: tuple[str, ...], parts: list[tuple[torch.Tensor, ...]]) -> dict[str, np.ndarray]:
    """Per-batch tuples of per-image results -> {key: float64 array over all images}."""
    return {key: torch.cat([p[j] for p in parts]).numpy().astype(np.float64) for j, key in enumerate(keys)}


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
