"""One table across run folders: ``aelab compare RUN...``.

Each row comes from a run's ``metrics.json`` (test split; PCA fitted on the run's own training split at the
run's latent size). The table is written as Markdown, CSV and a self-contained HTML page with a plot of SSIM
against latent size (autoencoders against PCA, log-scaled latent axis). Runs of different data sets may be
compared: the data set is a column and each data set gets its own PCA curve.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aelab.errors import ConfigError, RunError
from aelab.files import atomic_write_bytes, atomic_write_text
from aelab.runs import Run


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = "{}"


COLUMNS: tuple[Column, ...] = (
    Column("name", "run"),
    Column("dataset", "data set"),
    Column("model", "model"),
    Column("latent", "latent"),
    Column("train_images", "train images", "{:,}"),
    Column("parameters", "parameters", "{:,}"),
    Column("epochs", "epochs"),
    Column("train_seconds", "training s", "{:,.0f}"),
    Column("precision", "precision"),  # fp32 or bf16: rows trained in different arithmetic are no like-for-like
    Column("ssim", "test SSIM", "{:.4f}"),
    Column("ssim7", "SSIM-7", "{:.4f}"),
    Column("psnr", "PSNR dB", "{:.2f}"),
    Column("mse", "MSE", "{:.5f}"),
    Column("knn5", "kNN-5 acc", "{:.4f}"),
    Column("pca_ssim", "PCA SSIM", "{:.4f}"),
    Column("pca_mse", "PCA MSE", "{:.5f}"),
)
SSIM_NOTE = ("SSIM: 11x11 Gaussian window (sigma 1.5), valid region, mean over the test images; SSIM-7: 7x7 "
             "uniform window (scikit-image's default). PCA SSIM: PCA with the run's latent size, fitted on the "
             "run's own training images. kNN-5 acc: 5-nearest-neighbour accuracy on the latent codes.")


# ------------------------------------------------------------------------------------------ rows
def run_row(path: str | Path) -> dict[str, Any]:
    """The table row of one evaluated run folder."""
    run = Run.open(path)
    m = run.load_metrics()
    try:
        info, ae, pca = m["run"], m["autoencoder"]["overall"], m["pca"]["overall"]
        return {
            "name": info["name"], "dataset": info["dataset"], "model": info["model"], "latent": int(info["latent"]),
            "train_images": m.get("split", {}).get("train"), "parameters": info.get("parameters"),
            "epochs": info.get("epochs"), "train_seconds": info.get("train_seconds"),
            "precision": info.get("precision"),
            "ssim": ae["ssim"], "ssim7": ae["ssim7"], "psnr": ae["psnr"], "mse": ae["mse"], "knn5": ae.get("knn5"),
            "pca_ssim": pca["ssim"], "pca_psnr": pca.get("psnr"), "pca_mse": pca.get("mse"), "path": str(run.path),
        }
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{run.metrics} lacks fields of this aelab version; rebuild it with 'aelab evaluate "
                       f"{run.path}'") from None


def load_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    if not paths:
        raise ConfigError("give at least one run folder, e.g. 'aelab compare runs/*'")
    return [run_row(p) for p in paths]


# ------------------------------------------------------------------------------------------ tables
def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def formatted(rows: Sequence[dict[str, Any]], columns: Sequence[Column] = COLUMNS) -> list[list[str]]:
    return [[_cell(r.get(c.key), c.fmt) for c in columns] for r in rows]


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column] = COLUMNS) -> str:
    """A GitHub Markdown table; text columns left-aligned, numbers right-aligned."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    numeric = [any(isinstance(r.get(c.key), int | float) and not isinstance(r.get(c.key), bool) for r in rows)
               for c in columns]
    lines = ["| " + " | ".join(esc(c.header) for c in columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in cells) + " |" for cells in formatted(rows, columns)]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> str:
    """Raw (unformatted) values, one column per key."""
    keys = list(keys) if keys else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ the plot
def _series(row: dict[str, Any], several_datasets: bool) -> str:
    label = str(row.get("series") or row["model"])
    return f"{label} ({row['dataset']})" if several_datasets else label


def draw_ssim_vs_latent(ax: Any, rows: Sequence[dict[str, Any]], title: str = "SSIM against latent size") -> None:
    """Test SSIM of each autoencoder series and of PCA (one curve per data set) against the latent size."""
    from matplotlib.ticker import FixedLocator, NullLocator

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    several = len(datasets) > 1
    groups: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        groups.setdefault(_series(r, several), []).append((r["latent"], r["ssim"]))
    for label, pts in groups.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linewidth=1.6, label=label)
    for ds in datasets:
        pca: dict[int, float] = {}
        for r in rows:
            if r["dataset"] == ds and r.get("pca_ssim") is not None:
                pca.setdefault(r["latent"], r["pca_ssim"])
        pts = sorted(pca.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", marker="s", color="0.45",
                linewidth=1.2, label=f"PCA ({ds})" if several else "PCA")
    latents = sorted({r["latent"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(latents))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(v) for v in latents])
    if len(latents) == 1:
        ax.set_xlim(latents[0] / 2, latents[0] * 2)
    ax.set_xlabel("latent size (log scale)")
    ax.set_ylabel("test SSIM (11x11 Gaussian)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_ssim_vs_latent(rows: Sequence[dict[str, Any]], title: str = "SSIM against latent size") -> bytes:
    """The SSIM-vs-latent plot as PNG bytes."""
    import matplotlib.style
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):  # the same look whatever styles were set in this process
        fig = Figure(figsize=(7.0, 4.4), dpi=110)
        draw_ssim_vs_latent(fig.add_subplot(), rows, title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_latent_sweep(rows: Sequence[dict[str, Any]], published: Sequence[tuple[int, str, float, str]],
                      title: str) -> bytes:
    """Two panels against the latent size: test SSIM (left) and MSE (right, log scale) of the autoencoder and
    of PCA, with published points ``(latent, "ssim" | "mse", value, label)`` as open markers."""
    import matplotlib.style
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    pts = sorted((r["latent"], r) for r in rows)
    latents = sorted({lat for lat, _ in pts} | {p[0] for p in published})
    markers = iter(["D", "^", "v", "P", "X", "*", "h"])
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11.0, 4.4), dpi=110)
        for ax, metric, label in ((fig.add_subplot(1, 2, 1), "ssim", "test SSIM (11x11 Gaussian)"),
                                  (fig.add_subplot(1, 2, 2), "mse", "test MSE (per pixel, log scale)")):
            ax.plot([lat for lat, _ in pts], [r[metric] for _, r in pts], marker="o", linewidth=1.6,
                    label="autoencoder (this study)")
            pca = [(lat, r.get(f"pca_{metric}")) for lat, r in pts if r.get(f"pca_{metric}") is not None]
            ax.plot([p[0] for p in pca], [p[1] for p in pca], linestyle="--", marker="s", color="0.45",
                    linewidth=1.2, label="PCA (same latent size)")
            by_label: dict[str, list[tuple[int, float]]] = {}
            for latent, m, value, name in published:
                if m == metric:
                    by_label.setdefault(name, []).append((latent, value))
            for name, ps in by_label.items():
                ax.plot([p[0] for p in ps], [p[1] for p in ps], linestyle="none", marker=next(markers, "o"),
                        markersize=8, markerfacecolor="none", markeredgewidth=1.5, label=f"published: {name}")
            ax.set_xscale("log", base=2)
            if metric == "mse":
                ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator(latents))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([str(v) for v in latents])
            ax.set_xlabel("latent size (log scale)")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ the page
def html_page(rows: Sequence[dict[str, Any]], title: str, plot_png: bytes, intro: str = "") -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("aelab.report", "templates"), autoescape=select_autoescape(["html"]))
    template = env.get_template("compare.html")
    return template.render(title=title, intro=intro, headers=[c.header for c in COLUMNS],
                           rows=formatted(rows), note=SSIM_NOTE,
                           plot=base64.b64encode(plot_png).decode("ascii"))


def write_comparison(rows: Sequence[dict[str, Any]], out: str | Path, title: str = "Comparison of runs",
                     stem: str = "comparison", intro: str = "") -> dict[str, Path]:
    """``stem``.md, .csv, .html and ``stem``-ssim-vs-latent.png in ``out``; returns the paths by kind."""
    out = Path(out)
    png = plot_ssim_vs_latent(rows, title)
    md = f"# {title}\n\n" + (f"{intro}\n\n" if intro else "") + markdown_table(rows) + f"\n{SSIM_NOTE}\n"
    files = {
        "markdown": atomic_write_text(out / f"{stem}.md", md),
        "csv": atomic_write_text(out / f"{stem}.csv", csv_text(rows)),
        "plot": atomic_write_bytes(out / f"{stem}-ssim-vs-latent.png", png),
    }
    files["html"] = atomic_write_text(out / f"{stem}.html", html_page(rows, title, png, intro))
    return files


def compare(paths: Sequence[str | Path], out: str | Path, title: str = "Comparison of runs"
            ) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Read every run (all errors before anything is written), then write the tables and the page."""
    rows = load_rows(paths)
    return rows, write_comparison(rows, out, title)
