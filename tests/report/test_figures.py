"""The figure functions on real data slices: what they draw is what they were given, labelled and readable."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from PIL import Image
from threadpoolctl import threadpool_limits

from aelab.data import load_dataset
from aelab.models import PCAModel
from aelab.report import figures as F


@pytest.fixture(scope="module")
def real() -> dict:
    """600 real Fashion-MNIST test images, their PCA codes (2-D and 16-D) and PCA reconstructions."""
    bundle = load_dataset("fashion-mnist", train_limit=2000, test_limit=600)
    with threadpool_limits(1):  # a 2-thread BLAS on a busy 2-core machine is many times slower
        pca = PCAModel(16).fit(bundle.train.images)
    codes16 = pca.encode(bundle.test.images)
    codes2 = codes16.clone()
    codes2[:, 2:] = 0  # the first two principal components: PCA with 2 components
    images = bundle.test.images.numpy().astype(np.float32) / 255.0
    recon16 = pca.decode(codes16).numpy().reshape(-1, 28, 28)
    recon2 = pca.decode(codes2).numpy().reshape(-1, 28, 28)
    rng = np.random.default_rng(0)
    return {"bundle": bundle, "images": images, "labels": bundle.test.labels.numpy(),
            "codes2": codes16[:, :2].numpy(), "codes16": codes16.numpy(),
            "recon16": recon16, "recon2": recon2, "ssim_a": rng.uniform(0.3, 0.9, 600),
            "ssim_b": rng.uniform(0.1, 0.5, 600), "names": [bundle.classes[int(c)] for c in bundle.test.labels]}


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def assert_readable(fig: Figure, min_font: float = 7.0) -> None:
    """PNG renders; every piece of text lies inside the canvas, is at least ``min_font`` pt, and no two
    pieces of text overlap."""
    drawn: list[Text] = []
    draw = Text.draw

    def recording_draw(self: Text, renderer: object) -> None:  # note which texts really get drawn
        draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    Text.draw = recording_draw  # type: ignore[method-assign]
    try:
        png = F.png_bytes(fig)
    finally:
        Text.draw = draw  # type: ignore[method-assign]
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 150
        canvas = (im.width, im.height)
    renderer = fig.canvas.get_renderer()
    items = list(dict.fromkeys(drawn))
    assert items, "no text drawn"
    boxes = []
    for t in items:
        assert t.get_fontsize() >= min_font, f"text {t.get_text()!r} is {t.get_fontsize()} pt"
        bb = t.get_window_extent(renderer)
        assert bb.x0 >= -1 and bb.y0 >= -1 and bb.x1 <= canvas[0] + 1 and bb.y1 <= canvas[1] + 1, (
            f"text {t.get_text()!r} runs off the figure: {bb}")
        boxes.append((t.get_text(), bb))
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        assert not (w > 1.5 and h > 1.5), f"texts {ta!r} and {tb!r} overlap"


def test_ten_classes_get_ten_distinct_colour_and_marker_pairs() -> None:
    pairs = {(F.class_colour(c), F.class_marker(c)) for c in range(10)}
    assert len(pairs) == 10
    assert len({F.class_colour(c) for c in range(10)}) == 10
    assert len({F.class_marker(c) for c in range(10)}) == 10


def test_latent_scatter_draws_every_point_in_its_class_colour_with_a_legend_of_names(real: dict) -> None:
    classes = real["bundle"].classes
    labels, codes = real["labels"], real["codes2"]
    fig = F.latent_scatter([("2-D", codes, labels, "z1", "z2"), ("again", codes[:300], labels[:300], "a", "b")],
                           classes, "Latent space")
    ax0, ax1 = fig.axes
    for ax, n in ((ax0, len(labels)), (ax1, 300)):
        cols = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert sum(len(c.get_offsets()) for c in cols) == n
    # Every drawn point sits at its code and carries its class's colour.
    drawn = {}
    for col in ax0.collections:
        colour = to_hex(col.get_facecolor()[0], keep_alpha=False)
        for xy in np.asarray(col.get_offsets()):
            drawn[tuple(np.round(xy, 5))] = colour
    for (x, y), c in zip(codes[:50], labels[:50], strict=True):
        assert drawn[(round(float(x), 5), round(float(y), 5))] == F.class_colour(int(c)).lower()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [classes[c] for c in np.unique(labels)]
    assert ax0.get_xlabel() == "z1" and ax1.get_title() == "again" and "Latent space" in texts(fig)
    assert_readable(fig)


def test_reconstructions_show_the_images_given_and_label_every_tile_with_its_ssim(real: dict) -> None:
    idx = np.arange(10)
    fig = F.reconstructions(real["images"][idx], real["recon16"][idx], real["recon2"][idx], real["ssim_a"][idx],
                            real["ssim_b"][idx], [real["names"][i] for i in idx], "Random set")
    shown = texts(fig)
    for i in idx:
        assert f"{real['ssim_a'][i]:.3f}" in shown and f"{real['ssim_b'][i]:.3f}" in shown
    for row, source in enumerate((real["images"], real["recon16"], real["recon2"])):
        for i in idx:
            ax = fig.axes[row * 10 + i]
            img = [a for a in ax.get_children() if isinstance(a, AxesImage)][0]
            np.testing.assert_array_equal(np.asarray(img.get_array()), source[i])
    assert {"original", "autoencoder", "PCA"} <= set(shown)
    assert_readable(fig)


def test_reconstructions_by_class_has_one_labelled_row_per_class(real: dict) -> None:
    labels, classes = real["labels"], real["bundle"].classes
    idx = np.array([np.flatnonzero(labels == c)[:3] for c in range(10)])
    fig = F.reconstructions_by_class(real["images"][idx], real["recon16"][idx], real["recon2"][idx],
                                     real["ssim_a"][idx], real["ssim_b"][idx], list(classes), "By class")
    assert len(fig.axes) == 10 * 3 * 3
    row_labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert row_labels == [F._short(c, 13) for c in classes]
    shown = texts(fig)
    assert all(f"{v:.3f}" in shown for v in real["ssim_a"][idx].ravel())
    assert_readable(fig)


@pytest.mark.parametrize("latent", [16, 100])
def test_triplets_draw_the_codes_as_bars_or_a_heat_strip(real: dict, latent: int) -> None:
    codes = real["codes16"][:4] if latent == 16 else np.random.default_rng(1).normal(size=(4, latent))
    fig = F.triplets(real["images"][:4], codes, real["recon16"][:4], real["ssim_a"][:4], real["names"][:4],
                     "Triplets")
    code_axes = [fig.axes[3 * i + 1] for i in range(4)]
    for ax, code in zip(code_axes, codes, strict=True):
        if latent <= 64:
            heights = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
            np.testing.assert_allclose(heights, code, rtol=1e-6)
        else:
            np.testing.assert_allclose(np.asarray(ax.images[0].get_array())[0], code)
    assert f"latent code ({latent} numbers)" in texts(fig)
    assert f"SSIM {real['ssim_a'][0]:.3f}" in texts(fig)
    assert_readable(fig)


def test_training_curves_plot_the_history_and_mark_the_best_epoch() -> None:
    hist = [{"epoch": e, "train_loss": 0.2 / e, "val_loss": 0.21 / e + (0.02 if e > 3 else 0), "lr": 1e-3 / e}
            for e in range(1, 7)]
    fig = F.training_curves(hist, best_epoch=3, stopped="early-stopping", loss_name="mse", title="Training")
    ax, ax_lr = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["train"].get_ydata(), [h["train_loss"] for h in hist])
    np.testing.assert_allclose(lines["validation"].get_ydata(), [h["val_loss"] for h in hist])
    best = lines["best epoch 3; stopped early"]
    assert list(best.get_xdata()) == [3, 3]
    np.testing.assert_allclose(ax_lr.get_lines()[0].get_ydata(), [h["lr"] for h in hist])
    assert ax.get_xlabel() == "epoch" and "mse" in ax.get_ylabel() and "learning rate" in ax_lr.get_ylabel()
    assert_readable(fig)


def test_training_curves_cope_with_a_single_epoch_without_validation() -> None:
    hist = [{"epoch": 1, "train_loss": 0.1, "val_loss": float("nan"), "lr": 1e-3}]
    fig = F.training_curves(hist, best_epoch=1, stopped="completed", loss_name="bce", title="One epoch")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert "validation" not in labels and "best epoch 1" in labels
    assert_readable(fig)


def test_decoded_manifold_puts_the_largest_y_at_the_top(real: dict) -> None:
    grid = real["recon16"][:12].reshape(3, 4, 28, 28)
    fig = F.decoded_manifold(grid, np.arange(4.0), np.array([-1.0, 0.0, 1.0]), "z1", "z2", "Manifold")
    mosaic = np.asarray(fig.axes[0].images[0].get_array())
    assert mosaic.shape == (3 * 29 - 1, 4 * 29 - 1)
    np.testing.assert_allclose(mosaic[:28, :28], grid[2, 0])       # top-left: last row (largest y)
    np.testing.assert_allclose(mosaic[-28:, -28:], grid[0, 3])     # bottom-right: first row, last column
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "-1"
    assert_readable(fig)


def test_interpolation_shows_both_originals_and_every_step(real: dict) -> None:
    a, b = real["images"][0], real["images"][1]
    t = np.linspace(0, 1, 7)
    blend = (1 - t)[:, None, None] * a + t[:, None, None] * b
    fig = F.interpolation(real["recon16"][:7], blend, t, a, b, "Ankle boot", "Pullover", "Interpolation")
    arrays = [np.asarray(ax.images[0].get_array()) for ax in fig.axes]
    assert len(arrays) == 2 * 9
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[8], b)
    np.testing.assert_allclose(arrays[9 + 4], blend[3])
    assert {"Ankle boot", "Pullover", "t = 0.5", "latent line", "pixel blend"} <= set(texts(fig))
    assert_readable(fig)


def test_per_class_quality_bars_hold_the_values_given() -> None:
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    ae = np.linspace(0.5, 0.9, 10)
    pca = np.linspace(0.3, 0.6, 10)
    fig = F.per_class_quality(names, ae, pca, float(ae.mean()), float(pca.mean()), "Per class")
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches if isinstance(p, Rectangle)]
    np.testing.assert_allclose(widths, np.concatenate([ae, pca]))
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    dashed = [ln for ln in ax.get_lines() if isinstance(ln, Line2D) and ln.get_linestyle() == "--"]
    assert sorted(ln.get_xdata()[0] for ln in dashed) == sorted([pca.mean(), ae.mean()])
    assert "SSIM" in ax.get_xlabel()
    assert_readable(fig)
