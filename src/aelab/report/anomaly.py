"""Figures of the one-class protocol: ROC curves, score histograms with the threshold, the most and least
anomalous test images, and AUROC per normal class across runs.

``anomaly_figures`` draws a run's three figures from ``evaluation.one_class``'s result and passes;
``auroc_by_class`` the summary of ``aelab anomaly --normal all``. ``write_figures`` writes PNGs atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from aelab.evaluation.one_class import OneClassPasses
from aelab.files import atomic_write_bytes
from aelab.report import figures as F

METHOD_COLOURS = {"mse": F.AE_COLOUR, "ssim": "#56B4E9", "knn": "#CC79A7", "mse+knn": "#555555", "ssim+knn": "#000000",
                  "elbo": "#882255", "pca": F.PCA_COLOUR, "iforest": "#009E73"}
NORMAL_COLOUR, ANOMALY_COLOUR = "#0072B2", "#D55E00"


@F.styled
def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], labels: dict[str, str], chosen: str,
               title: str) -> Figure:
    """ROC curves: ``curves`` maps a method to (false positive rates, true positive rates, AUROC); the detector's
    own score (``chosen``) drawn thick."""
    fig = F.new_figure(6.4, 4.6)
    ax = fig.subplots()
    for k, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, color=METHOD_COLOURS.get(k, "#999999"), lw=2.4 if k == chosen else 1.2,
                ls="--" if k in ("pca", "iforest") else "-", label=f"{labels[k]}: {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls=":", label="random: 0.500")
    ax.set_xlabel("false positive rate (normal test images flagged)")
    ax.set_ylabel("true positive rate (anomalies flagged)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(True)
    ax.legend(loc="lower right", title="method: AUROC", fontsize=7.5, frameon=False)
    fig.suptitle(title)
    return fig


@F.styled
def score_histogram(normal: np.ndarray, anomalous: np.ndarray, threshold: float, label: str, quantile: float,
                    title: str) -> Figure:
    """Density histograms of the score of normal and anomalous test images, and the threshold as a line."""
    fig = F.new_figure(6.4, 3.8)
    ax = fig.subplots()
    both = np.r_[normal, anomalous]
    lo, hi = np.quantile(both, [0.0, 0.995])
    bins = np.linspace(lo, hi, 60)
    ax.hist(np.clip(anomalous, lo, hi), bins=bins, density=True, alpha=0.55, color=ANOMALY_COLOUR,
            label=f"anomalous ({len(anomalous):,})")
    ax.hist(np.clip(normal, lo, hi), bins=bins, density=True, alpha=0.55, color=NORMAL_COLOUR,
            label=f"normal ({len(normal):,})")
    ax.axvline(threshold, color="black", lw=1.4, ls="--",
               label=f"threshold {threshold:.4g} ({quantile:g} quantile of normal validation)")
    ax.set_xlabel(f"{label}\n(higher: more anomalous; clipped at the 99.5% quantile)")
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=7.5)
    fig.suptitle(title)
    return fig


@F.styled
def extremes(most: np.ndarray, least: np.ndarray, most_info: Sequence[str], least_info: Sequence[str],
             title: str) -> Figure:
    """Two rows of test images: the most anomalous (top) and the least (bottom), each with its class and score."""
    n = max(len(most), len(least))
    fig = F.new_figure(0.98 * n + 0.8, 3.4)
    axes = fig.subplots(2, n, squeeze=False)
    for r, (images, info, name) in enumerate(((most, most_info, "most\nanomalous"),
                                              (least, least_info, "least\nanomalous"))):
        for i in range(n):
            ax = axes[r, i]
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(images):
                ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                ax.set_xlabel(info[i], fontsize=7, labelpad=2)
        axes[r, 0].set_ylabel(name, fontsize=9, fontweight="bold")
    fig.suptitle(title)
    return fig


@F.styled
def auroc_by_class(class_names: Sequence[str], values: dict[str, Sequence[float]], title: str,
                   goal: float | None = None) -> Figure:
    """Grouped bars: the AUROC of each method for each normal class, and each method's mean in the legend."""
    fig = F.new_figure(9.5, 4.0)
    ax = fig.subplots()
    x = np.arange(len(class_names))
    width = 0.8 / len(values)
    colours = (F.AE_COLOUR, F.PCA_COLOUR, "#009E73", "#CC79A7")
    for j, (name, vals) in enumerate(values.items()):
        ax.bar(x + (j - (len(values) - 1) / 2) * width, vals, width, color=colours[j % len(colours)],
               label=f"{name} (mean {np.mean(vals):.3f})")
    if goal is not None:
        ax.axhline(goal, color="black", lw=0.9, ls=":", label=f"goal for the mean: {goal:g}")
    ax.set_xticks(x, [c[:11] for c in class_names], rotation=30, ha="right")
    ax.set_ylabel("AUROC (normal class vs the other nine)")
    low = min(min(v) for v in values.values())
    ax.set_ylim(max(0.0, np.floor(low * 20) / 20 - 0.05), 1.0)
    ax.grid(True, axis="y")
    ax.set_axisbelow(True)
    fig.legend(loc="outside right center", frameon=False)
    fig.suptitle(title)
    return fig


def anomaly_figures(result: dict[str, Any], passes: OneClassPasses, class_names: Sequence[str], k: int = 10
                    ) -> list[tuple[str, Figure]]:
    """(file name, figure) of a one-class run: ROC curves, the score histogram, the extremes."""
    y = passes.is_anomaly
    labels = {m: v["label"] for m, v in result["methods"].items()}
    curves = {m: (*roc_curve(y, s)[:2], result["methods"][m]["auroc"]) for m, s in passes.scores.items()}
    tag = f"normal: {result['normal']} ({result['dataset']}, {result['model']}, latent {result['latent']})"
    chosen = result["score"]
    s = passes.scores[chosen]
    order = np.argsort(-s, kind="stable")
    most, least = order[:k].copy(), order[::-1][:k].copy()
    info = [f"{class_names[int(passes.labels[i])][:10]}\n{s[i]:.3g}" for i in range(len(s))]
    return [
        ("anomaly_roc.png", roc_curves(curves, labels, chosen, f"ROC curves, {tag}")),
        ("anomaly_hist.png", score_histogram(s[~y], s[y], passes.thresholds[chosen], result["score_label"],
                                             result["quantile"], f"Test scores, {tag}")),
        ("anomaly_extremes.png", extremes(passes.images[most].numpy(), passes.images[least].numpy(),
                                          [info[i] for i in most], [info[i] for i in least],
                                          f"Most and least anomalous test images by {result['score_label']}\n"
                                          f"{tag}")),
    ]


def write_figures(folder: Path, figures: list[tuple[str, Figure]]) -> list[Path]:
    """Render each figure to PNG and write it into ``folder`` atomically."""
    return [atomic_write_bytes(folder / name, F.png_bytes(fig)) for name, fig in figures]
