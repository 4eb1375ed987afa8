"""aelab compare: one table across real, evaluated runs of two data sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aelab.cli import main
from aelab.config import resolve
from aelab.errors import RunError
from aelab.experiments.jobs import train_job
from aelab.report.compare import compare, draw_ssim_vs_latent, markdown_table, plot_ssim_vs_latent

TINY = dict(model="dense", width=0.25, train_limit=800, epochs=1, threads=1, report=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two evaluated runs: Fashion-MNIST at latent 4 and MNIST at latent 8."""
    root = tmp_path_factory.mktemp("compare-runs")
    out = []
    for dataset, latent in (("fashion-mnist", 4), ("mnist", 8)):
        run, _ = train_job(resolve(overrides=dict(TINY, dataset=dataset, latent=latent)),
                           out=root / f"{dataset}-{latent}", progress=False)
        out.append(run.path)
    return out


def test_the_tables_hold_the_runs_numbers(runs: list[Path], tmp_path: Path) -> None:
    rows, files = compare(runs, tmp_path / "cmp")
    metrics = [json.loads((p / "metrics.json").read_text()) for p in runs]
    with open(files["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert [r["dataset"] for r in table] == ["fashion-mnist", "mnist"]  # data sets may be mixed
    for row, m in zip(table, metrics, strict=True):
        ae, pca = m["autoencoder"]["overall"], m["pca"]["overall"]
        assert int(row["latent"]) == m["run"]["latent"]
        assert int(row["parameters"]) == m["run"]["parameters"]
        assert int(row["epochs"]) == 1
        assert float(row["train_seconds"]) == pytest.approx(m["run"]["train_seconds"])
        for key in ("ssim", "ssim7", "psnr", "mse", "knn5"):
            assert float(row[key]) == pytest.approx(ae[key], rel=1e-9)
        assert float(row["pca_ssim"]) == pytest.approx(pca["ssim"], rel=1e-9)

    md = files["markdown"].read_text()
    for m in metrics:
        assert f"| {m['autoencoder']['overall']['ssim']:.4f} |" in md
        assert f"| {m['pca']['overall']['ssim']:.4f} |" in md
        assert m["run"]["precision"] in ("fp32", "bf16") and f"| {m['run']['precision']} |" in md
    header = md.splitlines()[2]
    for name in ("data set", "model", "latent", "parameters", "epochs", "training s", "precision", "test SSIM",
                 "SSIM-7", "PSNR dB", "MSE", "kNN-5 acc", "PCA SSIM"):
        assert f" {name} " in header

    html = files["html"].read_text()
    assert html.count("<tr>") == 3 and "data:image/png;base64," in html
    assert f"{metrics[1]['autoencoder']['overall']['psnr']:.2f}" in html
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_has_a_log_latent_axis_and_a_pca_curve_per_data_set(runs: list[Path], tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    rows, _ = compare(runs, tmp_path / "cmp")
    ax = Figure().add_subplot()
    draw_ssim_vs_latent(ax, rows)
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["dense (fashion-mnist)", "dense (mnist)", "PCA (fashion-mnist)", "PCA (mnist)"]
    pca_mnist = ax.get_lines()[3]
    assert list(pca_mnist.get_xdata()) == [8] and list(pca_mnist.get_ydata()) == [rows[1]["pca_ssim"]]
    assert plot_ssim_vs_latent(rows)[:4] == b"\x89PNG"


def test_cli_prints_the_table_and_refuses_bad_runs(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = CliRunner().invoke(main, ["compare", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("| run | data set |") and "mnist-8" in result.output
    assert {p.name for p in out.iterdir()} == {"comparison.md", "comparison.csv", "comparison.html",
                                              "comparison-ssim-vs-latent.png"}

    missing = CliRunner().invoke(main, ["compare", str(runs[0]), str(tmp_path / "nope"), "--out",
                                        str(tmp_path / "x")])
    assert missing.exit_code == 2 and missing.output.startswith("error: run folder")
    assert missing.output.count("\n") == 1 and not (tmp_path / "x").exists()


def test_a_run_without_metrics_names_the_fix(tmp_path: Path) -> None:
    run, _ = train_job(resolve(overrides=dict(TINY, latent=4)), out=tmp_path / "unevaluated", progress=False,
                       evaluate=False)
    with pytest.raises(RunError, match="aelab evaluate"):
        compare([run.path], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_markdown_aligns_numbers_right() -> None:
    md = markdown_table([{"name": "a", "dataset": "mnist", "model": "dense", "latent": 2, "ssim": 0.5}])
    assert md.splitlines()[1].startswith("|---|---|---|---:|")
    assert "| – |" in md  # missing values are shown as a dash
