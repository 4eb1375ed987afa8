"""The report of real runs: written by 'aelab train', rebuilt by 'aelab report', self-contained, checked in a
real browser, and refused with one line (nothing written) for run folders it cannot be made from."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aelab.cli import main
from aelab.evaluation import COLUMNS
from aelab.runs import Run

FIGURES = ("latent.png", "recon_random.png", "recon_best.png", "recon_worst.png", "recon_by_class.png",
           "triplets.png", "training.png", "manifold.png", "interpolation.png", "per_class_ssim.png")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Page(HTMLParser):
    """The parts of report.html the tests read: images, links, metric cells, figure captions, all text."""

    def __init__(self, html: str):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.cells: list[dict[str, str]] = []
        self.captions: list[str] = []
        self.text: list[str] = []
        self.meta: list[dict[str, str]] = []
        self._cell: dict[str, str] | None = None
        self._row_metric: str | None = None
        self._row_class: str | None = None
        self._caption: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.urls += [a[k] for k in ("src", "href") if k in a]
        if tag == "img":
            self.images.append(a)
        elif tag == "meta":
            self.meta.append(a)
        elif tag == "tr":
            self._row_metric, self._row_class = a.get("data-metric"), a.get("data-class")
        elif tag == "td" and "data-model" in a:
            self._cell = {"metric": a.get("data-metric") or self._row_metric or "", "model": a["data-model"],
                          "class": self._row_class or "", "text": ""}
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self._cell["text"] = self._cell["text"].strip()
            self.cells.append(self._cell)
            self._cell = None
        elif tag == "figcaption" and self._caption is not None:
            self.captions.append(" ".join("".join(self._caption).split()))
            self._caption = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data
        if self._caption is not None:
            self._caption.append(data)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def decimals(fmt: str) -> int:
    return int(fmt.split(".")[1][0])


def assert_cells_hold_metrics(cells: list[dict[str, str]], metrics: dict) -> int:
    """Every metric cell shows the metrics.json number to its printed precision; returns how many."""
    fmts = {k: f for k, _, f in COLUMNS}
    checked = 0
    for cell in cells:
        model = "autoencoder" if cell["model"] == "autoencoder" else "pca"
        part = metrics[model]["per_class"][cell["class"]] if cell["class"] else metrics[model]["overall"]
        want = part[cell["metric"]]
        got = float(cell["text"].replace(",", ""))
        assert math.isclose(got, want, abs_tol=0.51 * 10 ** -decimals(fmts[cell["metric"]])), cell
        checked += 1
    return checked


# ------------------------------------------------------------------------------------------- the runs
def _train(out: Path, *options: str) -> Path:
    result = invoke("train", "--model", "dense", "--train-limit", "2000", "--threads", "1", "--out", out, "-q",
                    *options)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def trained_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """'aelab train' of a small dense model with a 2-D latent; the report is written at the end by default."""
    return _train(tmp_path_factory.mktemp("report") / "dense2d", "--latent", "2", "--epochs", "2")


@pytest.fixture(scope="session")
def reported_16d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small dense run with a 16-D latent trained without a report, then 'aelab report' on its folder."""
    path = _train(tmp_path_factory.mktemp("report") / "dense16", "--latent", "16", "--epochs", "1", "--no-report")
    assert not (path / "report.html").exists() and not (path / "figures").exists()
    result = invoke("report", path, "--tsne-sample", "300")
    assert result.exit_code == 0, result.output
    return path, result.output


def test_train_writes_the_report_and_every_figure_at_the_end(trained_2d: Path) -> None:
    report = trained_2d / "report.html"
    assert report.is_file()
    assert report.stat().st_mtime >= (trained_2d / "metrics.json").stat().st_mtime
    for name in FIGURES:
        with Image.open(trained_2d / "figures" / name) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200
    assert not [p.name for p in trained_2d.rglob("*.tmp")]
    page = Page(report.read_text())
    metrics = json.loads((trained_2d / "metrics.json").read_text())
    assert assert_cells_hold_metrics(page.cells, metrics) == 2 * len(COLUMNS) + 2 * 3 * 10
    captions = " ".join(page.captions)
    assert "2-D codes" in captions and "t-SNE" not in captions   # a 2-D latent is plotted directly
    assert "grid spanning the 2% to 98% quantiles of the test codes" in captions


def test_report_command_rebuilds_the_report_from_the_run_folder(reported_16d: tuple[Path, str]) -> None:
    path, output = reported_16d
    assert output.strip() == f"report: {path / 'report.html'}"
    assert sorted(p.name for p in (path / "figures").iterdir()) == sorted(FIGURES)


def test_report_is_one_self_contained_page(reported_16d: tuple[Path, str]) -> None:
    path, _ = reported_16d
    page = Page((path / "report.html").read_text())
    assert len(page.images) == len(FIGURES)
    for img, name in zip(page.images, FIGURES, strict=True):
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        png = base64.b64decode(img["src"][len(prefix):])
        assert png == (path / "figures" / name).read_bytes()   # the page shows exactly the files written
        with Image.open(io.BytesIO(png)) as im:
            assert (im.width, im.height) == (int(img["width"]), int(img["height"]))
        assert img["alt"]
    # Nothing to fetch: every URL is embedded data, an in-page anchor or the local figure file.
    for url in page.urls:
        assert url.startswith(("data:", "#", "figures/")), url
    csp = [m for m in page.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_report_shows_config_split_training_time_metrics_and_a_caption_per_figure(
        reported_16d: tuple[Path, str]) -> None:
    path, _ = reported_16d
    page = Page((path / "report.html").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    cfg = Run(path).config()
    assert assert_cells_hold_metrics(page.cells, metrics) == 2 * len(COLUMNS) + 2 * 3 * 10
    text = " ".join(" ".join(page.text).split())
    for key, value in (("model", cfg.model), ("latent", str(cfg.latent)), ("loss", cfg.loss),
                       ("train_limit", str(cfg.train_limit)), ("schedule", cfg.schedule)):
        assert f"{key} {value}" in text
    split = metrics["split"]
    assert f"training images {split['train']:,}" in text and f"test images {split['test']:,}" in text
    assert "T-shirt/top, Trouser, Pullover" in text
    shown = re.search(r"training time ([\d.]+) s", text)
    assert shown and math.isclose(float(shown.group(1)), metrics["run"]["train_seconds"], abs_tol=0.51)
    from aelab.device import select_precision

    # the arithmetic the Trainer chose (auto: bf16 on a CPU with native bf16, else fp32) is recorded and shown
    assert metrics["run"]["precision"] == select_precision(cfg.precision, torch.device("cpu"))
    assert f"arithmetic {metrics['run']['precision']}" in text
    assert len(page.captions) == len(FIGURES) and all(len(c) > 40 for c in page.captions)
    captions = " ".join(page.captions)
    assert "first two principal directions" in captions and "t-SNE on 300 of them" in captions


@pytest.mark.browser
def test_report_renders_in_headless_chromium(reported_16d: tuple[Path, str], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (make browser installs it)")
    from playwright.sync_api import sync_playwright

    path, _ = reported_16d
    metrics = json.loads((path / "metrics.json").read_text())
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((path / "report.html").resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({complete: e.complete, w: e.naturalWidth, h: e.naturalHeight}))")
            cells = page.eval_on_selector_all(
                "td[data-model]", "els => els.map(e => ({metric: e.dataset.metric || e.closest('tr').dataset.metric,"
                " model: e.dataset.model, class: e.closest('tr').dataset.class || '', text: e.textContent}))")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) == len(FIGURES)
    assert all(im["complete"] and im["w"] > 0 and im["h"] > 0 for im in images), images
    for cell in cells:
        cell["text"] = cell["text"].strip()
    assert assert_cells_hold_metrics(cells, metrics) == 2 * len(COLUMNS) + 2 * 3 * 10
    assert problems == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 3000   # the whole page, figures included


# ------------------------------------------------------------------------------------------- bad input
def _broken_copy(src: Path, dest: Path, drop: tuple[str, ...] = (), edit_metrics: dict | None = None) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("figures", "report.html", *drop))
    if edit_metrics is not None:
        m = json.loads((dest / "metrics.json").read_text())
        m.update(edit_metrics)
        (dest / "metrics.json").write_text(json.dumps(m))
    return dest


def _listing(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("drop", "edit", "expect"), [
    (("best.safetensors", "last.safetensors"), None, "has no checkpoint"),
    (("metrics.json",), None, "run 'aelab evaluate"),
    ((), {"format": "aelab-metrics-0"}, "older format"),
    ((), {"pca": {"overall": {}}}, "lacks pca.overall.ssim"),
    (("history.csv",), None, "has no history.csv"),
], ids=["no-checkpoint", "no-metrics", "old-metrics-format", "incomplete-metrics", "no-history"])
def test_a_run_the_report_cannot_be_made_from_gets_one_line_and_nothing_is_written(
        trained_2d: Path, tmp_path: Path, drop: tuple[str, ...], edit: dict | None, expect: str) -> None:
    path = _broken_copy(trained_2d, tmp_path / "run", drop, edit)
    before = _listing(path)
    result = invoke("report", path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], result.output
    assert "aelab " in lines[0]   # it names the command that makes what is missing
    assert _listing(path) == before
    assert not (path / "figures").exists() and not (path / "report.html").exists()


def test_a_missing_or_foreign_folder_is_refused(tmp_path: Path) -> None:
    for target in (tmp_path / "nowhere", tmp_path):
        result = invoke("report", target)
        assert result.exit_code == 2 and result.output.startswith("error: ")
        assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_failed_rebuild_leaves_the_previous_report_untouched(trained_2d: Path, tmp_path: Path) -> None:
    path = tmp_path / "run"
    shutil.copytree(trained_2d, path)
    (path / "metrics.json").write_text('{"format": "aelab-metrics-1", "run": ')   # cut off mid-write
    before = _listing(path)
    result = invoke("report", path)
    assert result.exit_code == 2 and "damaged" in result.output and "aelab evaluate" in result.output
    assert _listing(path) == before    # the old report.html and figures are byte for byte the same
    assert not list(path.rglob("*.tmp"))
