"""The explorer in real Chromium: the real server (uvicorn, 127.0.0.1, a free port), the real page, a real run.

Playwright drives Debian's /usr/bin/chromium (the launch of tests/report/test_page.py); the test skips with
a message where it is missing. It waits for the scatter, hovers a point (its image and reconstruction
appear), clicks an empty spot (a decoded image appears) and moves (it changes), picks two points (the
interpolation strip and the neighbours appear), uploads a PNG, and takes a screenshot that must not be
blank. No request may leave 127.0.0.1, and the page may log no error.

``AELAB_EXPLORER_RUN=RUN`` uses that run instead of the tiny one; ``AELAB_EXPLORER_SCREENSHOT=FILE`` keeps
the screenshot there too (docs/explorer.png is made this way, see docs/explorer.md).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.explorer.conftest import start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.browser

# the sum of a loaded <img>'s grey pixels, read back through a canvas (same-origin images only)
PIXELS_JS = """sel => { const im = document.querySelector(sel);
  if (!im.complete || !im.naturalWidth) return null;
  const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(im, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; const out = [];
  for (let i = 0; i < d.length; i += 4) out.push(d[i]);
  return out; }"""
LOADED_JS = "sel => { const im = document.querySelector(sel); return im.complete && im.naturalWidth > 0 ? " \
            "[im.naturalWidth, im.naturalHeight] : null; }"


@pytest.fixture(scope="module")
def server(run16: Path) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    run = Path(os.environ.get("AELAB_EXPLORER_RUN") or run16)
    proc, url = start_server(run)
    try:
        yield url
    finally:
        code, rest = stop_server(proc)
        assert code == 0 and "stopped" in rest, rest


def wait_until(page: Any, js: str, arg: Any = None, timeout_s: float = 15.0) -> Any:
    """Poll ``js`` (a function of ``arg``) until it returns something truthy. (Playwright's wait_for_function
    evaluates strings, which the page's Content-Security-Policy forbids, as it should.)"""
    deadline = time.monotonic() + timeout_s
    while not (value := page.evaluate(js, arg)):
        assert time.monotonic() < deadline, f"timed out waiting for {js[:120]}"
        page.wait_for_timeout(50)
    return value


def wait_loaded(page: Any, sel: str) -> list[int]:
    return wait_until(page, LOADED_JS, sel)


def test_the_page_walks_the_latent_space(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            # a hover image still loading when the mouse reaches the next point is cancelled (ERR_ABORTED): fine
            page.on("requestfailed", lambda r: None if "ERR_ABORTED" in (r.failure or "") else
                    problems.append(f"failed request: {r.url} ({r.failure})"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server, wait_until="load")
            wait_until(page, "() => window.explorer && window.explorer.ready", timeout_s=30)

            # the scatter: 10,000 points drawn, a legend of 10 classes
            n = page.evaluate("window.explorer.state.n")
            drawn = page.evaluate("""() => { const c = document.getElementById('map');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let k = 0;
                for (let i = 3; i < d.length; i += 4) if (d[i] > 0) k++; return k; }""")
            assert n == 10_000 and drawn > 5_000, (n, drawn)
            assert page.locator("#legend li").count() == 10
            assert page.locator("#sample-panel").is_hidden()  # not a VAE: no prior to sample from
            box = page.locator("#map").bounding_box()
            at = lambda xy: (box["x"] + xy[0], box["y"] + xy[1])  # noqa: E731

            # hover a point: its image and reconstruction appear, with class and SSIM
            assert page.evaluate("document.getElementById('hover-input').naturalWidth") == 0
            page.mouse.move(*at(page.evaluate("window.explorer.screenOf(123)")))
            assert wait_loaded(page, "#hover-input") == [28, 28] and wait_loaded(page, "#hover-recon") == [28, 28]
            hovered = int(page.locator("#hover-panel").get_attribute("data-index"))
            assert "SSIM" in page.locator("#hover-facts").inner_text()
            truth = np.asarray(Image.open(io.BytesIO(page.request.get(
                f"{server}api/images/{hovered}?kind=input").body())))
            assert page.evaluate(PIXELS_JS, "#hover-input") == truth.ravel().tolist()

            # click an empty spot: the decoded image appears; move: it follows the mouse and changes
            spot = page.evaluate("window.explorer.emptySpot()")
            assert spot is not None
            page.mouse.click(*at(spot))
            wait_until(page, "() => window.explorer.decodes >= 1")
            assert wait_loaded(page, "#decoded") == [28, 28]
            first = page.evaluate(PIXELS_JS, "#decoded")
            assert "following" in page.locator("#probe-state").inner_text()
            far = page.evaluate("window.explorer.emptySpot(10, 10)")
            page.mouse.move(*at(far), steps=8)
            wait_until(page, f"before => {{ const p = ({PIXELS_JS})('#decoded'); "
                             f"return p !== null && p.join(',') !== before; }}", ",".join(map(str, first)))
            assert page.evaluate("window.explorer.decodes") >= 2
            page.mouse.click(*at(far))   # pin it
            assert page.locator("#probe-state").inner_text() == "pinned"

            # pick two points: the interpolation strip (10 images) and the neighbours of A appear
            page.mouse.click(*at(page.evaluate("window.explorer.screenOf(3)")))
            wait_until(page, "() => window.explorer.state.a !== null")
            page.mouse.click(*at(page.evaluate("window.explorer.screenOf(4000)")))
            assert wait_loaded(page, "#strip") == [280, 28]
            strip = np.array(page.evaluate(PIXELS_JS, "#strip")).reshape(28, 280)
            assert strip.std() > 1 and not (strip[:, :28] == strip[:, -28:]).all()  # not blank, A differs from B
            wait_until(page, "() => document.querySelectorAll('#nn-latent img').length === 8 && "
                             "document.querySelectorAll('#nn-pixel img').length === 8")
            wait_until(page, "() => [...document.querySelectorAll('#neighbour-panel img')]"
                             ".every(im => im.complete && im.naturalWidth === 28)")

            # upload a PNG: encoded, placed on the map, its reconstruction shown
            buf = io.BytesIO()
            Image.fromarray(truth).save(buf, format="PNG")
            page.set_input_files("#upload", files=[{"name": "mine.png", "mimeType": "image/png",
                                                    "buffer": buf.getvalue()}])
            assert wait_loaded(page, "#up-recon") == [28, 28]
            assert page.evaluate(PIXELS_JS, "#up-input") == truth.ravel().tolist()
            assert "SSIM" in page.locator("#up-facts").inner_text()
            assert page.evaluate("window.explorer.state.upload.xy.length") == 2
            # "use as A": the interpolation now starts at the upload (decoded as one batch of codes)
            old_strip = ",".join(map(str, strip.ravel().tolist()))
            page.click("#up-pick")
            wait_until(page, f"old => {{ const p = ({PIXELS_JS})('#strip'); "
                             f"return p !== null && p.length === 28 * 280 && p.join(',') !== old; }}", old_strip)
            assert page.locator("#pick-a-label").inner_text() == "A: your image"

            page.mouse.move(*at(page.evaluate("window.explorer.screenOf(77)")))
            wait_loaded(page, "#hover-input")
            page.wait_for_timeout(300)
            shot = tmp_path / "explorer.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert problems == [], problems
    assert all(u.startswith((server, "data:", "blob:")) for u in requests), [u for u in requests
                                                                               if not u.startswith(server)][:5]
    with Image.open(shot) as im:
        grey = np.asarray(im.convert("L"))
        colours = len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0))
    assert grey.shape == (900, 1400) and grey.std() > 20 and colours > 200, (grey.std(), colours)
    if os.environ.get("AELAB_EXPLORER_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["AELAB_EXPLORER_SCREENSHOT"])
