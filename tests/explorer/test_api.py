"""The explorer's API on real trained runs, through Starlette's test client.

Every answer is checked against the model itself (``aelab.load`` on the same run): the map against
scikit-learn's PCA of the test codes, decodes against ``TrainedModel.decode``, uploads against
``TrainedModel.encode``, neighbours against a brute-force search. Then a list of malformed requests, each
answered with a 4xx and a one-line JSON message, after which the server still answers correctly.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.decomposition import PCA
from starlette.applications import Starlette
from starlette.testclient import TestClient

import aelab
from aelab.data import load_dataset
from aelab.errors import AelabError
from aelab.evaluation.metrics import ssim_per_image
from aelab.explorer import app as explorer_app
from aelab.explorer.app import LOOPBACK_NAMES, HostGuard, bind, create_app, is_loopback, serve
from tests.explorer.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def truth(run16: Path) -> dict:
    """What the explorer should show, computed here without it: the model, the test images, their codes."""
    model = aelab.load(run16)
    cfg = model.config
    test = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                        classes=cfg.classes, train_limit=cfg.train_limit).test
    images = test.images.numpy()
    return {"model": model, "images": images, "labels": test.labels.numpy(), "codes": model.encode(images)}


def png_of(pixels: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def read_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("L"))


def decoded_u8(model: aelab.TrainedModel, codes: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(model.decode(codes) * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ the map
def test_info_and_projection_show_the_test_set_on_its_pca(client16: TestClient, truth: dict, run16: Path) -> None:
    info = client16.get("/api/info").json()
    assert info["latent"] == 16 and info["points"] == 10_000 and len(info["classes"]) == 10
    assert info["map"]["method"] == "pca" and "PCA's inverse" in info["map"]["description"]
    assert info["limits"]["max_batch"] == 256 and info["limits"]["max_upload_bytes"] == 1_000_000
    r = client16.get("/api/projection")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    proj = r.json()
    xy = np.c_[proj["x"], proj["y"]]
    assert xy.shape == (10_000, 2) and np.isfinite(xy).all()
    assert proj["labels"] == truth["labels"].tolist()
    expected = PCA(n_components=2, random_state=0).fit(truth["codes"]).transform(truth["codes"])
    assert np.abs(xy - expected).max() < 1e-3 * (1 + np.abs(expected).max())
    # the SSIM shown on hover is the headline SSIM of each reconstruction
    idx = [0, 17, 4242, 9999]
    x = truth["images"][idx].astype(np.float32)[:, None] / 255.0
    recon = truth["model"].reconstruct(x)
    s = ssim_per_image(torch.from_numpy(recon), torch.from_numpy(x)).numpy()
    assert np.allclose(np.array(proj["ssim"])[idx], s, atol=2e-4)
    assert (run16 / "explorer" / "projection-pca.npz").is_file()  # cached in the run folder


def test_images_and_point_facts(client16: TestClient, truth: dict) -> None:
    r = client16.get("/api/images/123", params={"kind": "input"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert (read_png(r.content) == truth["images"][123]).all()
    recon = read_png(client16.get("/api/images/123", params={"kind": "reconstruction"}).content)
    assert np.abs(recon.astype(int) - decoded_u8(truth["model"], truth["codes"][123:124])[0]).max() <= 1
    again = client16.get("/api/images/123", params={"kind": "input"}, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    p = client16.get("/api/points/123").json()
    assert p["label"] == int(truth["labels"][123]) and np.allclose(p["code"], truth["codes"][123], atol=1e-5)


def test_the_2d_map_is_the_latent_space(client2d: TestClient) -> None:
    info = client2d.get("/api/info").json()
    proj = client2d.get("/api/projection").json()
    assert info["latent"] == 2 and proj["method"] == "identity" and info["map"]["exact_lift"] is True
    p = client2d.get("/api/points/5").json()
    assert np.allclose([proj["x"][5], proj["y"][5]], p["code"], atol=1e-4)
    lifted = client2d.get("/api/lift", params={"x": 0.25, "y": -1.5, "format": "json"}).json()
    assert np.allclose(lifted["codes"], [[0.25, -1.5]])


def test_a_vae_run_offers_samples_from_its_prior(run_vae: Path) -> None:
    model = aelab.load(run_vae)
    with TestClient(create_app(run_vae, test_limit=200)) as c:
        assert c.get("/api/info").json()["vae"] is True
        r = c.get("/api/sample", params={"n": 8, "seed": 3})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        strip = read_png(r.content)
        z = torch.randn(8, 8, generator=torch.Generator().manual_seed(3)).numpy()
        want = decoded_u8(model, z)
        assert strip.shape == (28, 224)
        assert np.abs(strip.reshape(28, 8, 28).transpose(1, 0, 2).astype(int) - want).max() <= 1
        assert not np.array_equal(read_png(c.get("/api/sample", params={"n": 8, "seed": 4}).content), strip)
        assert c.get("/api/sample", params={"n": 0}).status_code == 400


# ------------------------------------------------------------------------------------------ decode
def test_decode_one_point_to_png_matches_the_model(client16: TestClient, truth: dict) -> None:
    code = truth["codes"][7]
    r = client16.get("/api/decode", params={"z": ",".join(f"{v:.9g}" for v in code)})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = read_png(r.content)
    assert got.shape == (28, 28)
    assert np.abs(got.astype(int) - decoded_u8(truth["model"], code[None])[0]).max() <= 1


def test_decode_a_batch_to_png_strip_and_to_arrays(client16: TestClient, truth: dict) -> None:
    codes = truth["codes"][:5] + np.float32(0.3)   # points off the test set too
    want = truth["model"].decode(codes)
    r = client16.post("/api/decode", json={"codes": codes.tolist(), "format": "json"})
    assert r.status_code == 200
    body = r.json()
    assert np.array(body["images"]).shape == (5, 28, 28) and np.abs(np.array(body["images"]) - want).max() < 1e-3
    strip = read_png(client16.post("/api/decode?format=png", json={"codes": codes.tolist()}).content)
    assert strip.shape == (28, 140)
    assert np.abs(strip.reshape(28, 5, 28).transpose(1, 0, 2).astype(int)
                  - decoded_u8(truth["model"], codes)).max() <= 1


def test_lift_decodes_the_code_on_the_principal_plane(client16: TestClient, truth: dict) -> None:
    pca = PCA(n_components=2, random_state=0).fit(truth["codes"])
    body = client16.get("/api/lift", params={"x": 1.5, "y": -0.5, "format": "json"}).json()
    expected = pca.inverse_transform(np.array([[1.5, -0.5]]))
    assert np.abs(np.array(body["codes"]) - expected).max() < 1e-3
    assert np.abs(np.array(body["images"]) - truth["model"].decode(expected.astype(np.float32))).max() < 2e-3


def test_interpolation_runs_from_a_to_b(client16: TestClient, truth: dict) -> None:
    body = client16.get("/api/interpolate", params={"a": 3, "b": 4000, "steps": 10, "format": "json"}).json()
    images, codes = np.array(body["images"]), np.array(body["codes"])
    assert images.shape == (10, 28, 28)
    assert np.allclose(codes[0], truth["codes"][3], atol=1e-5) and np.allclose(codes[-1], truth["codes"][4000],
                                                                                atol=1e-5)
    assert np.allclose(codes[5], truth["codes"][3] + 5 / 9 * (truth["codes"][4000] - truth["codes"][3]), atol=1e-4)
    assert np.abs(images[-1] - truth["model"].decode(truth["codes"][4000:4001])[0]).max() < 1e-3
    strip = client16.get("/api/interpolate", params={"a": 3, "b": 4000})
    assert read_png(strip.content).shape == (28, 280)


# ------------------------------------------------------------------------------------------ neighbours, upload
def test_neighbours_in_latent_and_pixel_space(client16: TestClient, truth: dict) -> None:
    body = client16.get("/api/neighbours", params={"index": 10, "k": 8}).json()
    for space, points in (("latent", truth["codes"]), ("pixel", truth["images"].reshape(10_000, -1) / 255.0)):
        found = body[space]
        assert len(found) == 8 and all(n["index"] != 10 for n in found)
        d = np.sqrt(((points - points[10]) ** 2).sum(1))
        d[10] = np.inf
        assert [n["index"] for n in found] == np.argsort(d, kind="stable")[:8].tolist() or \
            np.allclose([n["distance"] for n in found], np.sort(d)[:8], atol=1e-3)
        assert [n["distance"] for n in found] == sorted(n["distance"] for n in found)


def test_upload_a_png_is_encoded_placed_and_reconstructed(client16: TestClient, truth: dict) -> None:
    i = 42
    r = client16.post("/api/encode", content=png_of(truth["images"][i]), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    up = r.json()
    assert np.allclose(up["code"], truth["codes"][i], atol=1e-4) and up["inverted"] is False
    proj = client16.get("/api/projection").json()
    assert np.allclose(up["xy"], [proj["x"][i], proj["y"][i]], atol=1e-3)
    assert abs(up["ssim"] - proj["ssim"][i]) < 1e-3
    recon = read_png(base64.b64decode(up["reconstruction"].split(",", 1)[1]))
    assert np.abs(recon.astype(int) - decoded_u8(truth["model"], truth["codes"][i:i + 1])[0]).max() <= 1
    assert up["neighbours"]["latent"][0]["index"] == i and up["neighbours"]["pixel"][0]["distance"] < 1e-3
    # the same image as a form upload, and as a dark drawing on white paper at 56x56 in colour
    form = client16.post("/api/encode", files={"file": ("x.png", png_of(truth["images"][i]), "image/png")}).json()
    assert np.allclose(form["code"], up["code"], atol=1e-6)
    big = np.kron(255 - truth["images"][i], np.ones((2, 2), np.uint8))
    paper = client16.post("/api/encode", content=png_of(big, "RGB")).json()
    assert paper["inverted"] is True and paper["size"] == [56, 56]


# ------------------------------------------------------------------------------------------ bad requests
Z16 = ",".join(["0.5"] * 16)
TEN_MB = b"\x89PNG" + b"\0" * 10_000_000


def chunked(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 65536):   # no Content-Length: the limit must hold while reading
        yield data[i:i + 65536]


BAD = [
    ("wrong length", "GET", "/api/decode", {"params": {"z": "1,2,3"}}, 400),
    ("NaN in z", "GET", "/api/decode", {"params": {"z": ",".join(["nan"] + ["0"] * 15)}}, 400),
    ("inf in z", "GET", "/api/decode", {"params": {"z": ",".join(["1e400"] * 16)}}, 400),
    ("huge z", "GET", "/api/decode", {"params": {"z": ",".join(["1e9"] * 16)}}, 400),
    ("text in z", "GET", "/api/decode", {"params": {"z": ",".join(["abc"] * 16)}}, 400),
    ("no z", "GET", "/api/decode", {}, 400),
    ("z twice", "GET", f"/api/decode?z={Z16}&z={Z16}", {}, 400),
    ("unknown parameter", "GET", "/api/decode", {"params": {"z": Z16, "bogus": "1"}}, 400),
    ("parameter for none", "GET", "/api/info", {"params": {"x": "1"}}, 400),
    ("bad format", "GET", "/api/decode", {"params": {"z": Z16, "format": "gif"}}, 400),
    ("body not JSON", "POST", "/api/decode", {"content": b"hello"}, 400),
    ("empty body", "POST", "/api/decode", {"content": b""}, 400),
    ("binary body", "POST", "/api/decode", {"content": b"\xff\xfe\x00"}, 400),
    ("codes of wrong width", "POST", "/api/decode", {"json": {"codes": [[0.0] * 15]}}, 400),
    ("ragged codes", "POST", "/api/decode", {"json": {"codes": [[0.0] * 16, [0.0] * 3]}}, 400),
    ("NaN in codes", "POST", "/api/decode", {"content": b'{"codes": [[NaN' + b", 0" * 15 + b"]]}"}, 400),
    ("inf in codes", "POST", "/api/decode", {"content": b'{"codes": [[1e999' + b", 0" * 15 + b"]]}"}, 400),
    ("huge int in codes", "POST", "/api/decode", {"content": b'{"codes": [[' + b"9" * 400 + b", 0" * 15 + b"]]}"},
     400),
    ("strings in codes", "POST", "/api/decode", {"json": {"codes": [["1"] * 16]}}, 400),
    ("booleans in codes", "POST", "/api/decode", {"json": {"codes": [[True] * 16]}}, 400),
    ("no codes", "POST", "/api/decode", {"json": {"codes": []}}, 400),
    ("codes not a list", "POST", "/api/decode", {"json": {"codes": "0.5"}}, 400),
    ("a list, not an object", "POST", "/api/decode", {"json": [[0.0] * 16]}, 400),
    ("extra key", "POST", "/api/decode", {"json": {"codes": [[0.0] * 16], "mode": "x"}}, 400),
    ("deep nesting", "POST", "/api/decode", {"content": b'{"codes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"},
     400),
    ("too large a batch", "POST", "/api/decode", {"json": {"codes": [[0.0] * 16] * 257}}, 413),
    ("text file as image", "POST", "/api/encode", {"content": b"just some text\n" * 20}, 400),
    ("empty upload", "POST", "/api/encode", {"content": b""}, 400),
    ("truncated PNG", "POST", "/api/encode", {"content": png_of(np.zeros((28, 28), np.uint8))[:40]}, 400),
    ("image too large", "POST", "/api/encode", {"content": png_of(np.zeros((10, 5000), np.uint8))}, 400),
    ("10 MB upload", "POST", "/api/encode", {"content": TEN_MB}, 413),
    ("10 MB upload, chunked", "POST", "/api/encode", {"content": chunked(TEN_MB)}, 413),
    ("form without a file", "POST", "/api/encode",
     {"content": b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--b--\r\n',
      "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400),
    ("bad invert", "POST", "/api/encode?invert=maybe", {"content": b"x"}, 400),
    ("index out of range", "GET", "/api/images/10000", {}, 404),
    # issue 29, case 10: the router's int convertor raised past 4,300 digits (a 500); the app reads the index now
    ("index of 5,000 digits", "GET", "/api/points/" + "9" * 5000, {}, 400),
    ("image index of 4,301 digits", "GET", "/api/images/" + "1" * 4301, {}, 400),
    ("index not a number", "GET", "/api/points/abc", {}, 400),
    ("index in Arabic digits", "GET", "/api/points/\u0661\u0662", {}, 400),
    ("negative index", "GET", "/api/images/-1", {}, 404),
    ("query integer of 5,000 digits", "GET", "/api/neighbours", {"params": {"index": "9" * 5000}}, 400),
    ("bad image kind", "GET", "/api/images/1", {"params": {"kind": "other"}}, 400),
    ("neighbour index out of range", "GET", "/api/neighbours", {"params": {"index": 10_000}}, 400),
    ("k not a number", "GET", "/api/neighbours", {"params": {"index": 1, "k": "many"}}, 400),
    ("k too large", "GET", "/api/neighbours", {"params": {"index": 1, "k": 10_000}}, 400),
    ("too many steps", "GET", "/api/interpolate", {"params": {"a": 1, "b": 2, "steps": 1000}}, 400),
    ("NaN on the map", "GET", "/api/lift", {"params": {"x": "nan", "y": "0"}}, 400),
    ("sample from a plain autoencoder", "GET", "/api/sample", {}, 400),
    ("unknown endpoint", "GET", "/api/nothing", {}, 404),
    ("wrong method", "DELETE", "/api/decode", {}, 405),
    ("missing static file", "GET", "/static/none.js", {}, 404),
]


def test_malformed_requests_get_a_4xx_with_a_one_line_json_message(client16: TestClient, truth: dict) -> None:
    wrong = []
    for name, method, path, kwargs, status in BAD:
        r = client16.request(method, path, **kwargs)
        ok = r.status_code == status and r.headers.get("content-type", "").startswith("application/json")
        message = r.json().get("error", "") if ok else ""
        if not (ok and message and "\n" not in message and "Traceback" not in message and len(message) <= 300):
            wrong.append(f"{name}: {r.status_code} {r.text[:200]!r}")
    assert not wrong, "\n".join(wrong)
    # the server still answers, and correctly
    code = truth["codes"][7]
    r = client16.get("/api/decode", params={"z": ",".join(f"{v:.9g}" for v in code)})
    assert r.status_code == 200
    assert np.abs(read_png(r.content).astype(int) - decoded_u8(truth["model"], code[None])[0]).max() <= 1
    assert client16.get("/api/info").json()["points"] == 10_000


@settings(max_examples=40, deadline=None)
@given(segment=st.text(max_size=30) | st.from_regex(r"[+-]?[0-9]{1,30}", fullmatch=True),
       param=st.sampled_from(["index", "k", "a", "steps", "n", "seed"]), value=st.text(max_size=30))
def test_no_path_or_query_value_gets_a_500(client16: TestClient, segment: str, param: str, value: str) -> None:
    """Every request the client can send is answered with a 2xx, 304 or 4xx, never a 500."""
    quoted = urllib.parse.quote(segment, safe="")
    for method, path, params in (("GET", f"/api/points/{quoted}", {}), ("GET", f"/api/images/{quoted}", {}),
                                 ("GET", "/api/neighbours", {"index": "1", param: value}),
                                 ("GET", "/api/interpolate", {"a": "0", "b": "1", param: value}),
                                 ("GET", "/api/sample", {param: value})):
        r = client16.request(method, path, params=params)
        assert r.status_code < 500, (path, params, r.status_code, r.text[:200])
        if r.status_code >= 400:
            assert "\n" not in r.json()["error"]


def test_error_messages_name_the_problem(client16: TestClient) -> None:
    r = client16.get("/api/decode", params={"z": "1,2,3"})
    assert r.json() == {"error": "z has 3 values, but the model's latent size is 16"}
    r = client16.post("/api/decode", json={"codes": [[0.0] * 16] * 257})
    assert "at most 256" in r.json()["error"]
    r = client16.post("/api/encode", content=TEN_MB)
    assert "at most 1,000,000" in r.json()["error"]
    assert "not an image" in client16.post("/api/encode", content=b"hello").json()["error"]


def test_limits_are_configurable(app16: Starlette) -> None:
    """A second app on the same run with small limits (on a 500-image slice of the test set, to start fast)."""
    small = create_app(app16.state.explorer.run, max_upload_bytes=500, max_batch=2, test_limit=500)
    assert small.state.explorer.map.method == "pca"
    with TestClient(small) as c:
        assert c.post("/api/decode", json={"codes": [[0.0] * 16] * 3}).status_code == 413
        assert c.post("/api/decode", json={"codes": [[0.0] * 16] * 2}).status_code == 200
        assert c.post("/api/encode", content=png_of(np.random.default_rng(0).integers(0, 255, (28, 28),
                                                                                      dtype=np.uint8))
                      ).status_code == 413


# ------------------------------------------------------------------------------------------ serving
def test_unknown_run_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AelabError, match="does not exist") as err:
        create_app(tmp_path / "no-such-run")
    assert "\n" not in str(err.value)


def test_loopback_server_answers_only_loopback_host_names(app16: Starlette) -> None:
    guarded = HostGuard(app16, hosts=LOOPBACK_NAMES)
    with TestClient(guarded, base_url="http://evil.example") as c:
        r = c.get("/api/info")
        assert r.status_code == 421 and "answers only" in r.json()["error"]
    with TestClient(guarded, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/info").status_code == 200
    with TestClient(guarded, base_url="http://[::1]:8765") as c:
        assert c.get("/api/info").status_code == 200
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_busy_port_is_a_one_line_error() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(AelabError, match="choose another --port"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_a_non_loopback_host_prints_a_warning(app16: Starlette, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    served = []
    monkeypatch.setattr(explorer_app, "create_app", lambda *a, **k: app16)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets))
    serve(app16.state.explorer.run, host="0.0.0.0", port=0, open_browser=False)
    out, err = capsys.readouterr()
    assert len(served) == 1
    warning = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "NO authentication" in warning[0]
    serve(app16.state.explorer.run, host="127.0.0.1", port=0, open_browser=False)
    out, err = capsys.readouterr()
    assert "WARNING" not in err and "loopback only" in out and "http://127.0.0.1:" in out


def test_the_real_server_answers_and_stops_cleanly_on_ctrl_c(run2d: Path) -> None:
    proc, url = start_server(run2d)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/info", timeout=10) as r:
            assert json.loads(r.read())["latent"] == 2
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b'<canvas id="map"' in r.read()
    finally:
        code, rest = stop_server(proc)
    assert code == 0, rest
    assert "aelab explore: stopped" in rest and "Traceback" not in rest
