"""The figures of a run's report, drawn in memory from the checked inputs and the test views."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from aelab.report import figures as F
from aelab.report.denoise import denoise_figures
from aelab.report.inputs import RunInputs, SplitViews
from aelab.report.vae import vae_figures

SCATTER_SAMPLE = 5000  # test images in the latent scatter (PCA map, or the 2-D latent itself)
TSNE_SAMPLE = 2000     # of those, the ones t-SNE / UMAP maps (t-SNE costs ~10-30 s for 2,000 on 2 cores)
TSNE_ITERATIONS = 500


@dataclass
class FigureOut:
    """One figure of the report: its file name, heading, one-line caption and PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes
    size: tuple[int, int] = (0, 0)

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

# ------------------------------------------------------------------------------------------- figures
def make_figures(inputs: RunInputs, views: SplitViews, tsne_sample: int = TSNE_SAMPLE,
                 scatter_sample: int = SCATTER_SAMPLE) -> list[FigureOut]:
    """Every figure of the report, drawn in memory, in the order the page shows them."""
    cfg, m = inputs.cfg, inputs.metrics
    rng = np.random.default_rng(cfg.seed)
    names = views.class_names
    n, d = views.codes.shape
    label_names = [names[int(c)] for c in views.labels]
    run_tag = f"{cfg.dataset_name}, {cfg.model}, latent {d}"
    out: list[FigureOut] = []

    def add(name: str, title: str, caption: str, fig: Any) -> None:
        png = F.png_bytes(fig)
        with Image.open(io.BytesIO(png)) as im:
            size = im.size
        out.append(FigureOut(name, title, caption, png, size))

    # Latent space.
    sample = np.sort(rng.permutation(n)[:min(scatter_sample, n)])
    add("latent.png", "Latent space", *_latent_figure(views, sample, rng, tsne_sample, run_tag))

    # Reconstructions: random, best, worst, per class.
    def recon(idx: np.ndarray, title: str) -> Any:
        return F.reconstructions(views.images[idx], views.ae[idx], views.pca[idx], views.ssim_ae[idx],
                                 views.ssim_pca[idx], [label_names[i] for i in idx], title)

    k = min(10, n)
    idx = np.sort(rng.permutation(n)[:k])
    add(inputs.run.reconstructions_figure.name, "Reconstructions: a random set",
        f"{k} test images drawn at random (seed {cfg.seed}), above the autoencoder's and PCA's reconstructions "
        f"with their SSIM.", recon(idx, f"Random test images and their reconstructions ({run_tag})"))
    order = np.argsort(-views.ssim_ae, kind="stable")
    add("recon_best.png", "Reconstructions: the best",
        f"The {k} test images the autoencoder reconstructs best by SSIM (of {n}), beside PCA's reconstruction.",
        recon(order[:k], f"Best {k} reconstructions by autoencoder SSIM ({run_tag})"))
    add("recon_worst.png", "Reconstructions: the worst",
        f"The {k} test images the autoencoder reconstructs worst by SSIM (of {n}), beside PCA's reconstruction.",
        recon(order[::-1][:k], f"Worst {k} reconstructions by autoencoder SSIM ({run_tag})"))
    add("recon_by_class.png", "Reconstructions by class", *_by_class_figure(views, rng, run_tag))

    # Original / latent / reconstruction triplets, one image from each of up to five classes.
    present = [int(c) for c in np.unique(views.labels)]
    picks = np.array([rng.choice(np.flatnonzero(views.labels == c)) for c in present[:5]])
    if len(picks) < 5:
        rest = np.setdiff1d(np.arange(n), picks)
        picks = np.concatenate([picks, rng.choice(rest, size=min(5 - len(picks), len(rest)), replace=False)])
    add("triplets.png", "Original, latent code, reconstruction",
        f"Test images, the {d} numbers the encoder turns each into (one bar each), and what "
        f"the decoder makes of them, with the reconstruction's SSIM.",
        F.triplets(views.images[picks], views.codes[picks], views.ae[picks], views.ssim_ae[picks],
                   [label_names[i] for i in picks], f"What the encoder keeps ({run_tag})"))

    # Training curves.
    r = m["run"]
    stop = {"early-stopping": "stopped early", "time-budget": "stopped by the time budget",
            "completed": "ran every planned epoch"}.get(str(r.get("stopped")), str(r.get("stopped") or "?"))
    add("training.png", "Training curves",
        f"Loss per epoch ({cfg.objective()}) on the training and validation images, and the learning rate; the best "
        f"validation epoch ({r.get('best_epoch')}) is the checkpoint evaluated; training {stop}.",
        F.training_curves(inputs.history, r.get("best_epoch"), r.get("stopped"),
                          "negative ELBO, nats per image" if cfg.is_vae else cfg.loss,
                          f"Training of {inputs.run.path.name}"))

    # Decoded manifold and interpolation.
    add("manifold.png", "Decoded manifold", *_manifold_figure(views, run_tag))
    add("interpolation.png", "Interpolation in latent space", *_interpolation_figure(views, rng, run_tag))

    # Per-class quality from metrics.json.
    classes = list(m["autoencoder"]["per_class"])
    ae_ssim = [m["autoencoder"]["per_class"][c]["ssim"] for c in classes]
    pca_ssim = [m["pca"]["per_class"].get(c, {}).get("ssim", math.nan) for c in classes]
    add("per_class_ssim.png", "SSIM per class",
        f"Mean test SSIM per class, the autoencoder beside PCA with {d} components (from metrics.json); dashed "
        f"lines: the means over all test images.",
        F.per_class_quality(classes, ae_ssim, pca_ssim, m["autoencoder"]["overall"]["ssim"],
                            m["pca"]["overall"]["ssim"], f"SSIM per class, autoencoder vs PCA ({run_tag})"))
    if cfg.is_vae:  # samples from the prior, the manifold over its quantiles, the KL per dimension
        for name, title, caption, fig in vae_figures(m, views.decode, d, cfg.seed, run_tag):
            add(name, title, caption, fig)
    if cfg.noise:  # a denoising run: noisy | denoised | clean, SSIM per method (report.denoise)
        for name, title, caption, fig in denoise_figures(inputs.model, cfg, inputs.run.load_pca(), run_tag):
            add(name, title, caption, fig)
    return out


def _latent_figure(views: SplitViews, sample: np.ndarray, rng: np.random.Generator, tsne_sample: int,
                   run_tag: str) -> tuple[str, Any]:
    codes, labels = views.codes[sample], views.labels[sample]
    d = codes.shape[1]
    title = f"Test images in latent space ({run_tag})"
    if d == 2:
        panels = [("the 2-D latent itself", codes, labels, "latent z₁", "latent z₂")]
        return (f"The 2-D codes of {len(sample):,} test images drawn at random, coloured by class.",
                F.latent_scatter(panels, views.class_names, title))
    if d == 1:
        jitter = labels + rng.uniform(-0.3, 0.3, len(labels))
        panels = [("the 1-D latent, one row per class", np.c_[codes[:, 0], jitter], labels, "latent z",
                   "class index (rows jittered)")]
        return (f"The 1-D codes of {len(sample):,} test images drawn at random, one jittered row per class.",
                F.latent_scatter(panels, views.class_names, title))
    pca = PCA(n_components=2, random_state=0).fit(codes)
    share = pca.explained_variance_ratio_ * 100
    panels = [(f"PCA of the {d}-D codes", pca.transform(codes), labels,
               f"principal direction 1 ({share[0]:.0f}% of variance)",
               f"principal direction 2 ({share[1]:.0f}% of variance)")]
    sub = np.sort(rng.permutation(len(sample))[:min(tsne_sample, len(sample))])
    perplexity = float(min(30.0, max(2.0, (len(sub) - 1) / 3.5)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=TSNE_ITERATIONS, random_state=0)
    panels.append((f"t-SNE of {len(sub):,} of them", tsne.fit_transform(codes[sub]), labels[sub], "t-SNE 1",
                   "t-SNE 2"))
    extra = ""
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        umap = None
    if umap is not None:
        emb = umap.UMAP(n_components=2, random_state=0).fit_transform(codes[sub])
        panels.append((f"UMAP of the same {len(sub):,}", emb, labels[sub], "UMAP 1", "UMAP 2"))
        extra = " and UMAP"
    caption = (f"The {d}-D codes of {len(sample):,} random test images projected on their first two principal "
               f"directions; t-SNE{extra} on {len(sub):,} of them (a subsample, to keep t-SNE quick; "
               f"perplexity {perplexity:.0f}, seed 0).")
    return caption, F.latent_scatter(panels, views.class_names, title)


def _by_class_figure(views: SplitViews, rng: np.random.Generator, run_tag: str) -> tuple[str, Any]:
    present = [int(c) for c in np.unique(views.labels)]
    k = max(1, min(3, min(int((views.labels == c).sum()) for c in present)))
    idx = np.array([np.sort(rng.choice(np.flatnonzero(views.labels == c), size=k, replace=False))
                    for c in present])
    fig = F.reconstructions_by_class(views.images[idx], views.ae[idx], views.pca[idx], views.ssim_ae[idx],
                                     views.ssim_pca[idx], [views.class_names[c] for c in present],
                                     f"Reconstructions by class ({run_tag})")
    return (f"{k} random test images per class (one row each): original, autoencoder (AE) and PCA, with the "
            f"SSIM of each reconstruction.", fig)


def _grid_values(scores: np.ndarray, steps: int) -> np.ndarray:
    return np.quantile(scores, np.linspace(0.02, 0.98, steps))


def _manifold_figure(views: SplitViews, run_tag: str, steps: int = 15) -> tuple[str, Any]:
    codes = views.codes
    d = codes.shape[1]
    title = f"Decoded manifold ({run_tag})"
    if d == 1:
        xs = _grid_values(codes[:, 0], steps)
        grid = views.decode(xs[:, None]).reshape(1, steps, *views.images.shape[1:])
        caption = (f"The decoder's images for {steps} values of the 1-D latent, from the 2% to the 98% quantile "
                   f"of the test codes.")
        return caption, F.decoded_manifold(grid, xs, np.array([0.0]), "latent z", "", title)
    if d == 2:
        xs, ys = _grid_values(codes[:, 0], steps), _grid_values(codes[:, 1], steps)
        zz = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)   # row i: y = ys[i]
        grid = views.decode(zz).reshape(steps, steps, *views.images.shape[1:])
        caption = (f"The decoder's images on a {steps}×{steps} grid spanning the 2% to 98% quantiles of the test "
                   f"codes in each latent dimension (grid values are quantiles, not evenly spaced).")
        return caption, F.decoded_manifold(grid, xs, ys, "latent z₁ (test-code quantiles)",
                                           "latent z₂ (test-code quantiles)", title)
    pca = PCA(n_components=2, random_state=0).fit(codes)
    scores = pca.transform(codes)
    share = pca.explained_variance_ratio_ * 100
    xs, ys = _grid_values(scores[:, 0], steps), _grid_values(scores[:, 1], steps)
    zz = pca.inverse_transform(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2))
    grid = views.decode(zz).reshape(steps, steps, *views.images.shape[1:])
    caption = (f"The decoder's images on a {steps}×{steps} grid in the plane of the first two principal "
               f"directions of the {d}-D test codes (through their mean), spanning the 2% to 98% quantiles.")
    return caption, F.decoded_manifold(grid, xs, ys, f"principal direction 1 ({share[0]:.0f}% of variance)",
                                       f"principal direction 2 ({share[1]:.0f}% of variance)", title)


def _interpolation_figure(views: SplitViews, rng: np.random.Generator, run_tag: str, steps: int = 9
                          ) -> tuple[str, Any]:
    present = [int(c) for c in np.unique(views.labels)]
    if len(present) >= 2:
        a, b = rng.choice(present, size=2, replace=False)
    else:
        a = b = present[0]
    i = int(rng.choice(np.flatnonzero(views.labels == a)))
    j = int(rng.choice(np.setdiff1d(np.flatnonzero(views.labels == b), [i])))
    t = np.linspace(0.0, 1.0, steps)
    line = (1 - t)[:, None] * views.codes[i] + t[:, None] * views.codes[j]
    decoded = views.decode(line)
    t_img = t.reshape(-1, *([1] * views.images[i].ndim))
    blended = (1 - t_img) * views.images[i] + t_img * views.images[j]
    na, nb = views.class_names[int(a)], views.class_names[int(b)]
    fig = F.interpolation(decoded, blended, t, views.images[i], views.images[j], na, nb,
                          f"Interpolation from {na} to {nb} ({run_tag})")
    caption = (f"Top: the decoder's images along the straight line between the codes of two test images ({na} "
               f"and {nb}, originals at the ends); bottom: the same two images simply blended pixel by pixel.")
    return caption, fig
