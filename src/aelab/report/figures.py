"""The figures of a run's report: one function per figure, each taking plain arrays and returning a Figure.

Nothing here knows about models, data loading or metrics: ``aelab.report`` computes the arrays (codes,
reconstructions, per-image SSIM, decoded grids) and hands them over. Figures are drawn with matplotlib's
object-oriented API on the Agg canvas (no pyplot, no global backend switch, safe in threads) with a
colour-blind-safe palette (Okabe-Ito, extended to ten classes, with a distinct marker per class so that colour
is never the only cue). ``png_bytes(fig)`` renders one to PNG.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from aelab.data.pixels import mosaic

# Okabe & Ito (2008), the colour-blind-safe set, with the yellow darkened for contrast on white, plus two
# colours from Paul Tol's muted scheme for classes 9 and 10.
CLASS_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#C9B200", "#0072B2", "#D55E00", "#CC79A7", "#000000",
                 "#882255", "#999999")
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
AE_COLOUR, PCA_COLOUR = "#0072B2", "#E69F00"  # autoencoder blue, PCA orange: the pair everywhere
TRAIN_COLOUR, VAL_COLOUR, BEST_COLOUR = "#0072B2", "#D55E00", "#009E73"
SSIM_LABEL = "SSIM (11×11 Gaussian window)"
DPI = 110

STYLE: dict[str, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "figure.titlesize": 12,
    "figure.titleweight": "bold",
    "legend.fontsize": 8.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "image.cmap": "gray",
    "savefig.facecolor": "white",
}


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float, constrained: bool = True) -> Figure:
    """A Figure on the Agg canvas (``width`` x ``height`` inches at ``DPI``)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (rendered with the style it was made under)."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def class_colour(index: int) -> str:
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def class_marker(index: int) -> str:
    return CLASS_MARKERS[index % len(CLASS_MARKERS)]


def styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under the report's matplotlib style, as every report figure is (the figure modules share it)."""
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with _style():
            return fn(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn  # type: ignore[attr-defined]
    return wrapper


def _tile(ax: Any, image: np.ndarray) -> None:
    """One image, (h, w) grey or (h, w, 3) colour, in [0, 1]."""
    image = np.asarray(image)
    image = image.reshape(28, 28) if image.ndim == 1 else np.clip(image, 0.0, 1.0)  # 784 pixels: a flat 28x28
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _short(name: str, limit: int = 12) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------- latent space
@styled
def latent_scatter(panels: Sequence[tuple[str, np.ndarray, np.ndarray, str, str]], class_names: Sequence[str],
                   title: str) -> Figure:
    """Latent codes scattered and coloured by class, one panel per view.

    ``panels``: (panel title, points (n, 2), labels (n,) class indices into ``class_names``, x label,
    y label) for each view: the 2-D latent itself, or PCA / t-SNE / UMAP maps of a larger one. One legend
    of class names (colour and marker) serves every panel.
    """
    k = len(panels)
    fig = new_figure(4.9 * k + 1.9, 4.9)
    axes = fig.subplots(1, k, squeeze=False)[0]
    present: set[int] = set()
    for ax, (name, pts, labels, xlabel, ylabel) in zip(axes, panels, strict=True):
        pts, labels = np.asarray(pts), np.asarray(labels)
        size = 6.0 if len(labels) > 3000 else 10.0
        present.update(int(c) for c in np.unique(labels))
        # Draw the classes interleaved, in rounds over a fixed shuffled order, so that no class hides the
        # others by being drawn last.
        order = np.random.default_rng(0).permutation(len(labels))
        for chunk in np.array_split(order, min(8, max(1, len(order)))):
            for c in np.unique(labels[chunk]):
                m = chunk[labels[chunk] == c]
                ax.scatter(pts[m, 0], pts[m, 1], s=size, c=class_colour(int(c)), marker=class_marker(int(c)),
                           alpha=0.6, linewidths=0, rasterized=True)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True)
        ax.set_axisbelow(True)
    handles = [Line2D([], [], linestyle="", marker=class_marker(c), markersize=7, color=class_colour(c),
                      label=class_names[c]) for c in sorted(present)]
    fig.legend(handles=handles, loc="outside right center", title="class", frameon=False)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------- reconstructions
@styled
def reconstructions(originals: np.ndarray, ae: np.ndarray, pca: np.ndarray, ssim_ae: np.ndarray,
                    ssim_pca: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """Originals (top row) above their autoencoder (middle) and PCA (bottom) reconstructions.

    Arrays of n images (n, H, W) or (n, H, W, 3) in [0, 1]; ``ssim_*`` (n,) per-image SSIM written under each tile;
    ``names`` (n,) the class of each original, written above it.
    """
    n = len(originals)
    tile = 0.95
    left, top, bottom = 0.45, 0.78, 0.2
    width, height = left + n * tile + 0.1, top + 3 * tile * 0.92 + 2 * 0.24 + bottom
    fig = new_figure(width, height, constrained=False)
    fig.subplots_adjust(left=left / width, right=1 - 0.1 / width, top=1 - top / height, bottom=bottom / height,
                        wspace=0.08, hspace=0.28)
    axes = fig.subplots(3, n, squeeze=False)
    rows = (("original", originals, None, None), ("autoencoder", ae, ssim_ae, AE_COLOUR),
            ("PCA", pca, ssim_pca, PCA_COLOUR))
    for r, (row_name, images, scores, colour) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            _tile(ax, images[i])
            if scores is None:
                ax.set_title(_short(names[i]), fontsize=8, pad=3)
            else:
                ax.set_xlabel(f"{float(scores[i]):.3f}", fontsize=8, labelpad=2, color=colour)
        axes[r, 0].set_ylabel(row_name, fontsize=9, rotation=90, labelpad=6,
                              color=colour or "black", fontweight="bold")
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    fig.text(0.5, 1 - 0.42 / height, f"number under each reconstruction: its {SSIM_LABEL} against the original",
             ha="center", va="top", fontsize=8, color="#444444")
    return fig


@styled
def reconstructions_by_class(originals: np.ndarray, ae: np.ndarray, pca: np.ndarray, ssim_ae: np.ndarray,
                             ssim_pca: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """One row per class: k examples, each as original | autoencoder | PCA, SSIM under the reconstructions.

    Arrays shaped (classes, k, H, W[, 3]) and (classes, k); ``class_names`` names the rows.
    """
    c, k = originals.shape[:2]
    tile = 0.72
    left, top, bottom, gap = 1.25, 0.95, 0.2, 0.18
    width = left + 3 * k * tile + (k - 1) * gap + 0.1
    height = top + c * (tile + 0.2) + bottom
    fig = new_figure(width, height, constrained=False)
    outer = fig.add_gridspec(1, k, left=left / width, right=1 - 0.1 / width, top=1 - top / height,
                             bottom=bottom / height, wspace=gap / (3 * tile))
    kinds = (("original", None, "black"), ("autoencoder", ssim_ae, AE_COLOUR), ("PCA", ssim_pca, PCA_COLOUR))
    for j in range(k):
        inner = outer[0, j].subgridspec(c, 3, wspace=0.06, hspace=0.32)
        for row in range(c):
            for col, (kind, scores, colour) in enumerate(kinds):
                ax = fig.add_subplot(inner[row, col])
                _tile(ax, (originals, ae, pca)[col][row, j])
                if scores is not None:
                    ax.set_xlabel(f"{float(scores[row, j]):.3f}", fontsize=7.5, labelpad=1.5, color=colour)
                if row == 0:
                    ax.set_title(kind if kind != "autoencoder" else "AE", fontsize=8.5, color=colour,
                                 fontweight="bold", pad=4)
                if j == 0 and col == 0:
                    ax.set_ylabel(_short(class_names[row], 13), fontsize=9, rotation=0, ha="right",
                                  va="center", labelpad=6)
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    fig.text(0.5, 1 - 0.42 / height, f"AE = autoencoder; number under each reconstruction: its {SSIM_LABEL}",
             ha="center", va="top", fontsize=8, color="#444444")
    return fig


@styled
def triplets(originals: np.ndarray, codes: np.ndarray, recon: np.ndarray, ssim: np.ndarray,
             names: Sequence[str], title: str) -> Figure:
    """Rows of original | latent code | reconstruction for a few images.

    The code is drawn as bars (latent <= 64) or as a heat strip (larger), on one shared scale for all rows.
    """
    n, d = codes.shape
    fig = new_figure(9.0, 1.25 * n + 0.9)
    axes = fig.subplots(n, 3, squeeze=False, gridspec_kw={"width_ratios": [1, 4.2, 1]})
    lim = float(np.max(np.abs(codes))) * 1.08 or 1.0
    strip = None
    for i in range(n):
        a_orig, a_code, a_rec = axes[i]
        _tile(a_orig, originals[i])
        a_orig.set_ylabel(_short(names[i]), fontsize=8.5)
        _tile(a_rec, recon[i])
        a_rec.set_ylabel(f"SSIM {float(ssim[i]):.3f}", fontsize=8.5, color=AE_COLOUR)
        a_rec.yaxis.set_label_position("right")
        if d <= 64:
            a_code.bar(np.arange(d), codes[i], color=AE_COLOUR, width=0.8)
            a_code.axhline(0, color="#888888", linewidth=0.6)
            a_code.set_ylim(-lim, lim)
            a_code.set_xlim(-0.7, d - 0.3)
            a_code.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(d, 16)))
            a_code.yaxis.set_major_locator(MaxNLocator(nbins=3, symmetric=True))
            a_code.set_ylabel("value", fontsize=8)
        else:
            strip = a_code.imshow(codes[i][None, :], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                                  interpolation="nearest")
            a_code.set_yticks([])
        if i < n - 1:
            a_code.tick_params(labelbottom=False)
        else:
            a_code.set_xlabel(f"latent dimension (0 to {d - 1})")
    axes[0, 0].set_title("original")
    axes[0, 1].set_title(f"latent code ({d} numbers)")
    axes[0, 2].set_title("reconstruction")
    if strip is not None:
        fig.colorbar(strip, ax=axes[:, 1], shrink=0.6, label="code value")
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------- training
@styled
def training_curves(history: Sequence[dict[str, Any]], best_epoch: int | None, stopped: str | None,
                    loss_name: str, title: str) -> Figure:
    """Train and validation loss per epoch (best epoch marked) beside the learning rate.

    ``history``: rows with epoch, train_loss, val_loss (may be NaN without a validation split) and lr.
    """
    epochs = np.array([int(h["epoch"]) for h in history])
    train = np.array([float(h["train_loss"]) for h in history])
    val = np.array([float(h["val_loss"]) for h in history])
    lr = np.array([float(h["lr"]) for h in history])
    fig = new_figure(10.0, 3.9)
    ax, ax_lr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    marker = "o" if len(epochs) <= 30 else None
    ax.plot(epochs, train, color=TRAIN_COLOUR, marker=marker, markersize=4, label="train")
    if np.isfinite(val).any():
        ax.plot(epochs, val, color=VAL_COLOUR, marker=marker, markersize=4, linestyle="--", label="validation")
    if best_epoch and best_epoch in set(epochs.tolist()):
        i = int(np.where(epochs == best_epoch)[0][0])
        reason = {"early-stopping": "; stopped early", "time-budget": "; stopped by the time budget"}.get(
            stopped or "", "")
        ax.axvline(best_epoch, color=BEST_COLOUR, linestyle=":", linewidth=1.4,
                   label=f"best epoch {best_epoch}{reason}")
        if np.isfinite(val[i]):
            ax.plot([best_epoch], [val[i]], marker="*", markersize=13, color=BEST_COLOUR, linestyle="",
                    zorder=5)
    finite = np.concatenate([train[np.isfinite(train)], val[np.isfinite(val)]])
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 8:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({loss_name})")
    ax.set_title("loss per epoch")
    ax.grid(True)
    ax.legend(loc="best", framealpha=0.95)
    ax_lr.plot(epochs, lr, color="#CC79A7", marker=marker, markersize=4)
    if lr.min() > 0 and lr.max() / lr.min() > 20:
        ax_lr.set_yscale("log")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate (end of epoch)")
    ax_lr.set_title("learning-rate schedule")
    ax_lr.grid(True)
    for a in (ax, ax_lr):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        pad = max(0.5, 0.04 * (epochs[-1] - epochs[0]))
        a.set_xlim(epochs[0] - pad, epochs[-1] + pad)
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------ the decoder
@styled
def decoded_manifold(grid: np.ndarray, x_values: np.ndarray, y_values: np.ndarray, xlabel: str, ylabel: str,
                     title: str) -> Figure:
    """A grid of decoded images (rows, cols, H, W) or (rows, cols, H, W, 3): column j decodes x_values[j], row i
    y_values[i].

    Row 0 is drawn at the top with the largest y value, as on a plot.
    """
    rows, cols, h, w = grid.shape[:4]
    board = mosaic(np.clip(grid[::-1].reshape(rows * cols, *grid.shape[2:]), 0.0, 1.0), cols)
    fig = new_figure(7.6, 7.0 * rows * h / (cols * w) + 1.0)
    ax = fig.subplots()
    ax.imshow(board, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    step = max(1, cols // 5)
    xt = list(range(0, cols, step))
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in xt], [f"{x_values[j]:.2g}" for j in xt])
    step = max(1, rows // 5)
    yt = list(range(0, rows, step)) if rows > 1 else []
    ax.set_yticks([(rows - 1 - i) * (h + 1) + (h - 1) / 2 for i in yt], [f"{y_values[i]:.2g}" for i in yt])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title)
    return fig


@styled
def interpolation(decoded: np.ndarray, blended: np.ndarray, alphas: np.ndarray, start: np.ndarray,
                  end: np.ndarray, start_name: str, end_name: str, title: str) -> Figure:
    """Decoded images along a straight latent line from ``start`` to ``end`` (top row), above a plain pixel
    blend of the same two images (bottom row) for contrast. Originals at both ends."""
    n = len(alphas)
    fig = new_figure(1.0 * (n + 2) + 0.5, 2.85, constrained=False)
    w = fig.get_figwidth()
    fig.subplots_adjust(left=0.4 / w, right=1 - 0.1 / w, top=0.8, bottom=0.04, wspace=0.08, hspace=0.15)
    axes = fig.subplots(2, n + 2)
    for r, row in enumerate((decoded, blended)):
        _tile(axes[r, 0], start)
        _tile(axes[r, -1], end)
        for i in range(n):
            _tile(axes[r, i + 1], row[i])
        for a in (axes[r, 0], axes[r, -1]):
            for spine in a.spines.values():
                spine.set_visible(True)
                spine.set_color("#888888")
    axes[0, 0].set_title(_short(start_name), fontsize=8.5)
    axes[0, -1].set_title(_short(end_name), fontsize=8.5)
    for i, a in enumerate(alphas):
        axes[0, i + 1].set_title(f"t = {a:.2g}", fontsize=8)
    axes[0, 0].set_ylabel("latent line", fontsize=9, fontweight="bold", color=AE_COLOUR)
    axes[1, 0].set_ylabel("pixel blend", fontsize=9, fontweight="bold", color=PCA_COLOUR)
    fig.suptitle(title, y=0.97)
    return fig


# ------------------------------------------------------------------------------------------- quality
@styled
def per_class_quality(class_names: Sequence[str], ae: Sequence[float], pca: Sequence[float],
                      overall_ae: float, overall_pca: float, title: str) -> Figure:
    """SSIM per class, autoencoder beside PCA, as horizontal bars with their values; overall means dashed."""
    c = len(class_names)
    fig = new_figure(8.6, 0.48 * c + 1.6)
    ax = fig.subplots()
    y = np.arange(c)[::-1]
    h = 0.38
    bars_ae = ax.barh(y + h / 2, ae, height=h, color=AE_COLOUR, label=f"autoencoder (mean {overall_ae:.3f})",
                      zorder=2)
    bars_pca = ax.barh(y - h / 2, pca, height=h, color=PCA_COLOUR, label=f"PCA (mean {overall_pca:.3f})",
                       zorder=2)
    for bars in (bars_ae, bars_pca):
        for text in ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8, zorder=4):
            text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.9})
    ax.axvline(overall_ae, color=AE_COLOUR, linestyle="--", linewidth=1, zorder=1)
    ax.axvline(overall_pca, color=PCA_COLOUR, linestyle="--", linewidth=1, zorder=1)
    ax.set_yticks(y, list(class_names))
    ax.set_xlim(0, 1.1)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel(f"{SSIM_LABEL}, mean over the class's test images (higher is better)")
    ax.grid(True, axis="x")
    ax.set_axisbelow(True)
    fig.legend(handles=[bars_ae, bars_pca], loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(title)
    return fig
