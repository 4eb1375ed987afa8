"""The parts of a run's report that only a denoising run (``--noise``) has: its table and its figures.

``denoise_context`` gives the page the table of metrics.json's ``denoising`` section (the model on the noisy
test images beside the noisy input, PCA and the classical filter, and the model on clean input);
``denoise_figures`` draws noisy | denoised | clean for random, best and worst test images, and the SSIM of each
method per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aelab.config import RunConfig
from aelab.data import DataBundle, load_dataset
from aelab.data.noise import NoiseSpec
from aelab.evaluation import fit_pca
from aelab.evaluation.denoise import METHODS, evaluate_denoising
from aelab.models import Autoencoder, PCAModel
from aelab.report import figures as F

METHOD_COLOURS = {"autoencoder": F.AE_COLOUR, "noisy": "#999999", "pca": F.PCA_COLOUR, "filter": "#009E73"}


def denoise_context(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The page's denoising table (None for a run without ``--noise``)."""
    section = metrics.get("denoising")
    if not section:
        return None
    best = max(METHODS, key=lambda k: section["methods"][k]["overall"]["ssim"])
    rows = [{"key": k, "label": m["label"], "better": k == best,
             "ssim": f"{m['overall']['ssim']:.4f}", "psnr": f"{m['overall']['psnr']:.2f}",
             "mse": f"{m['overall']['mse']:.5f}"} for k, m in section["methods"].items()]
    return {"description": section["description"], "rows": rows, "margin": f"{section['ssim_margin']:+.4f}",
            "best_baseline": section["methods"][section["best_baseline"]]["label"],
            "filter": section["filter"]["chosen_on"]}


@F.styled
def noisy_denoised_clean(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray, ssim_noisy: np.ndarray,
                         ssim: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """Three rows of n tiles: the noisy input, the model's output, the clean image; SSIM against the clean image
    under the first two."""
    n = len(clean)
    fig = F.new_figure(0.95 * n + 0.6, 3.6)
    axes = fig.subplots(3, n, squeeze=False)
    rows = (("noisy", noisy, ssim_noisy, "#666666"), ("denoised", denoised, ssim, F.AE_COLOUR),
            ("clean", clean, None, "black"))
    for r, (row_name, images, scores, colour) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(images[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(names[i][:11], fontsize=8, pad=3)
            if scores is not None:
                ax.set_xlabel(f"{float(scores[i]):.3f}", fontsize=8, labelpad=2, color=colour)
        axes[r, 0].set_ylabel(row_name, fontsize=9, color=colour, fontweight="bold")
    fig.suptitle(title)
    return fig


@F.styled
def ssim_by_method(class_names: Sequence[str], per_method: dict[str, list[float]], labels: dict[str, str],
                   title: str) -> Figure:
    """Grouped bars: mean SSIM per class for each method."""
    fig = F.new_figure(9.0, 3.8)
    ax = fig.subplots()
    x = np.arange(len(class_names))
    width = 0.8 / len(per_method)
    for j, (k, values) in enumerate(per_method.items()):
        ax.bar(x + (j - (len(per_method) - 1) / 2) * width, values, width, label=labels[k],
               color=METHOD_COLOURS.get(k, "#CC79A7"))
    ax.set_xticks(x, [c[:11] for c in class_names], rotation=30, ha="right")
    ax.set_ylabel(F.SSIM_LABEL + " vs clean")
    ax.set_ylim(0, 1)
    ax.grid(True, axis="y")
    ax.set_axisbelow(True)
    fig.legend(loc="outside right center", frameon=False)
    fig.suptitle(title)
    return fig


def denoise_figures(model: Autoencoder, cfg: RunConfig, pca: PCAModel | None, run_tag: str,
                    bundle: DataBundle | None = None) -> list[tuple[str, str, str, Figure]]:
    """(file name, title, caption, figure) of each denoising figure of a ``--noise`` run; the passes are made
    again (a few seconds) exactly as the evaluation made them."""
    spec, seed = NoiseSpec.parse(cfg.noise), cfg.seed
    if spec is None:
        return []
    bundle = bundle or load_dataset(cfg.dataset, **cfg.data_kwargs())
    if pca is None or pca.latent != cfg.latent:
        pca = fit_pca(bundle, cfg.latent)
    section, passes = evaluate_denoising(model, bundle, spec, pca, seed)
    names = [bundle.classes[int(c)] for c in bundle.test.labels.numpy()]
    rng = np.random.default_rng(seed)
    n = len(passes.clean)
    k = min(10, n)
    order = np.argsort(-passes.ssim, kind="stable")
    out = []
    for tag, idx, what in (("random", np.sort(rng.permutation(n)[:k]), f"{k} test images drawn at random"),
                           ("best", order[:k], f"the {k} test images the model denoises best (by SSIM)"),
                           ("worst", order[::-1][:k], f"the {k} test images it denoises worst")):
        fig = noisy_denoised_clean(passes.noisy[idx], passes.denoised[idx], passes.clean[idx],
                                   passes.ssim_noisy[idx], passes.ssim[idx], [names[i] for i in idx],
                                   f"Denoising, {tag} ({spec}; {run_tag})")
        out.append((f"denoise_{tag}.png", f"Denoising: {tag}",
                    f"{what[0].upper() + what[1:]}: {spec.describe()} (top), the model's output (middle), the clean "
                    f"image (bottom); numbers: SSIM against the clean image.", fig))
    classes = list(section["methods"]["autoencoder"]["per_class"])
    per_method = {k: [section["methods"][k]["per_class"][c]["ssim"] for c in classes] for k in METHODS}
    labels = {k: section["methods"][k]["label"] for k in METHODS}
    out.append(("denoise_by_class.png", "Denoising per class",
                f"Mean SSIM against the clean test images per class, on the same noisy images ({spec}): the model, "
                f"the noisy input, PCA and the {section['filter']['name']} (chosen on the validation split).",
                ssim_by_method(classes, per_method, labels, f"Denoising per class ({spec}; {run_tag})")))
    return out
