"""The parts of a run's report that only a variational autoencoder has: generation figures and its own numbers.

``vae_figures`` draws samples from the prior, the decoded manifold over the prior's quantiles (2-D latent:
the classic VAE picture) and the KL per latent dimension; ``vae_context`` gives the page its table of ELBO,
IWAE bound and active units (metrics.json's ``vae`` section) and, when metrics.json has one, the plain
autoencoder's metrics to show beside the VAE's. The interpolation between two test images and the latent
scatter are the report's own figures (``run_figures``), drawn from the posterior means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aelab.data.pixels import mosaic
from aelab.models import prior_codes, prior_quantiles
from aelab.report import figures as F

SAMPLE_GRID = 8        # the prior-sample figure shows SAMPLE_GRID x SAMPLE_GRID images
MANIFOLD_STEPS = 15
MANIFOLD_QUANTILES = (0.03, 0.97)


@F.styled
def image_grid(images: np.ndarray, cols: int, title: str) -> Figure:
    """Images (n, H, W) grey or (n, H, W, 3) colour in [0, 1] as one mosaic, ``cols`` per row."""
    n, h, w = images.shape[:3]
    rows = -(-n // cols)
    board = mosaic(np.clip(images, 0.0, 1.0), cols)
    fig = F.new_figure(7.0, 7.0 * rows * h / (cols * w) + 0.6)
    ax = fig.subplots()
    ax.imshow(board, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


@F.styled
def kl_per_dimension(kl: np.ndarray, mean_variance: np.ndarray, threshold: float, title: str) -> Figure:
    """Mean KL per latent dimension (nats), largest first; active units (posterior-mean variance above
    ``threshold``) in blue, inactive ones in grey."""
    order = np.argsort(-kl, kind="stable")
    active = mean_variance[order] > threshold
    d = len(kl)
    fig = F.new_figure(max(6.0, min(12.0, 0.16 * d + 3.0)), 3.6)
    ax = fig.subplots()
    x = np.arange(d)
    ax.bar(x[active], kl[order][active], color=F.AE_COLOUR, label=f"active ({int(active.sum())})")
    if (~active).any():
        ax.bar(x[~active], kl[order][~active], color="#999999", label=f"inactive ({int((~active).sum())})")
    ax.set_xlabel("latent dimension, by mean KL" if d > 16 else "latent dimension")
    if d <= 16:
        ax.set_xticks(x, [str(int(j)) for j in order])
    else:
        ax.set_xticks([])
    ax.set_ylabel("mean KL over test images (nats)")
    ax.grid(True, axis="y")
    ax.set_axisbelow(True)
    ax.legend(loc="upper right", frameon=False)
    fig.suptitle(title)
    return fig


def vae_figures(metrics: dict[str, Any], decode: Callable[[np.ndarray], np.ndarray], latent: int, seed: int,
                run_tag: str) -> list[tuple[str, str, str, Figure]]:
    """(file name, heading, caption, figure) of each VAE figure, in the order the page shows them."""
    out: list[tuple[str, str, str, Figure]] = []
    n = SAMPLE_GRID * SAMPLE_GRID
    samples = decode(prior_codes(n, latent, seed))
    out.append(("prior_samples.png", "Samples from the prior",
                f"{n} codes drawn from the prior N(0, I) (seed {seed}) and decoded: what the model generates "
                f"(the decoder's mean image, no pixel noise added). 'aelab sample RUN -n 64 -o grid.png' draws "
                f"more.", image_grid(samples, SAMPLE_GRID, f"Decoded samples from the prior ({run_tag})")))
    if latent == 2:
        values = prior_quantiles(MANIFOLD_STEPS, *MANIFOLD_QUANTILES)
        zz = np.stack(np.meshgrid(values, values), axis=-1).reshape(-1, 2)
        decoded = decode(zz)  # (n, H, W) or (n, H, W, 3): the display layout
        grid = decoded.reshape(len(values), len(values), *decoded.shape[1:])
        out.append(("prior_manifold.png", "Decoded manifold over the prior",
                    f"The decoder's images on a {len(values)}×{len(values)} grid of the prior's quantiles (norm.ppf "
                    f"of {MANIFOLD_QUANTILES[0]:.0%} to {MANIFOLD_QUANTILES[1]:.0%}, evenly spaced in probability): "
                    f"every cell is a code the prior gives, so a region of mush or blanks is a hole in the "
                    f"generative model.",
                    F.decoded_manifold(grid, values, values, "latent z₁ (prior quantiles)",
                                       "latent z₂ (prior quantiles)", f"Decoded manifold over the prior ({run_tag})")))
    v = metrics.get("vae") or {}
    if v.get("kl_per_dim"):
        kl = np.asarray(v["kl_per_dim"], dtype=np.float64)
        var = np.asarray(v.get("posterior_mean_variance") or np.zeros_like(kl), dtype=np.float64)
        thr = float(v.get("active_threshold", 0.01))
        out.append(("kl_per_dim.png", "KL per latent dimension",
                    f"Mean KL(q(z_j|x) || N(0, 1)) of each latent dimension over the test images (nats; from "
                    f"metrics.json). Active units: dimensions whose posterior mean varies over the test images by "
                    f"more than {thr:g} (variance); {v.get('active_units')} of {latent}.",
                    kl_per_dimension(kl, var, thr, f"KL per latent dimension ({run_tag})")))
    return out


def _nats(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, int | float) else "–"


def vae_context(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Rows of the page's VAE table (None for a plain autoencoder)."""
    v = metrics.get("vae")
    if not v:
        return None
    rows = [("ELBO", _nats(v.get("elbo")), f"all {v.get('images', 0):,} test images, one posterior sample each"),
            ("reconstruction term E_q[log p(x|z)]", _nats(v.get("reconstruction")), "the same sample"),
            ("KL(q(z|x) || p(z))", _nats(v.get("kl")), "closed form"),
            (f"IWAE bound, k = {v.get('iwae_k')}", _nats(v.get("iwae")),
             f"{v.get('iwae_images', 0):,} test images (a fixed sample)"),
            ("ELBO of the same images", _nats(v.get("iwae_elbo")), f"from the same {v.get('iwae_k')} samples")]
    b = v.get("binarized")
    if b:
        rows += [("binarised test images: ELBO", _nats(b.get("elbo")), "pixels sampled from Bernoulli(grey level)"),
                 (f"binarised test images: IWAE, k = {b.get('iwae_k')}", _nats(b.get("iwae")),
                  f"{b.get('iwae_images', 0):,} images")]
    sigma = v.get("sigma")
    likelihood = v.get("likelihood", "?") + (f", sigma {sigma:.4f}" if isinstance(sigma, int | float) else "")
    return {"rows": rows, "likelihood": likelihood, "active_units": v.get("active_units"),
            "latent": len(v.get("kl_per_dim") or []), "threshold": v.get("active_threshold")}


def plain_context(metrics: dict[str, Any], keys: list[str]) -> dict[str, Any] | None:
    """The plain autoencoder's overall values for the page's metric rows ``keys`` (None when not given)."""
    p = metrics.get("plain_autoencoder")
    if not p:
        return None
    return {"label": f"plain AE ({p.get('model')}, latent {p.get('latent')})", "run": p.get("run"),
            "values": {k: p.get("overall", {}).get(k) for k in keys}}
