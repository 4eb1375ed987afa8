"""``aelab explore RUN``: a local web app to walk the latent space of a trained run (one page + a JSON/PNG API).

Why Starlette on uvicorn (not FastAPI, not Flask): the API is ten small endpoints whose inputs (latent
vectors in a query string, raw image bodies) are checked by hand anyway, to give one-line ``{"error": ...}``
messages. FastAPI would add pydantic models whose 422 answers we would have to rewrite, and ~0.1 ms per
request of validation; Flask is WSGI (one thread per request, no cheap way to batch concurrent decodes).
Starlette is the ASGI toolkit FastAPI itself is built on: small, maintained, with a test client, static files
and multipart parsing; uvicorn is its standard server and stops cleanly on Ctrl-C.

The app (``create_app``) serves one static page (``static/``: plain HTML, JS and canvas, nothing fetched
from the internet) and a JSON/PNG API over an ``Explorer`` (``engine.py``: the model loaded once, the test
set encoded, reconstructed and scored at start-up, the map from ``projection.py``); inputs are checked in
``checks.py``. Torch is held to ``threads`` CPU threads (1 by default) so the page stays responsive.

The server binds 127.0.0.1 by default. It has no authentication: any other host must be named explicitly,
and ``serve`` then prints a warning. On loopback it answers only requests whose Host header names loopback
(a guard against DNS rebinding from web pages the user visits).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from aelab.data import display
from aelab.errors import AelabError, ConfigError, InputError
from aelab.explorer.checks import (
    MAX_ABS_CODE,
    MAX_K,
    MAX_STEPS,
    ApiError,
    Query,
    checked,
    parse_code_text,
    parse_codes,
    read_body,
    whole_number,
)
from aelab.explorer.engine import DecodeBatcher, Explorer, png_grey

STATIC = Path(__file__).with_name("static")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
log = logging.getLogger("aelab.explorer")


# ------------------------------------------------------------------------------------------ the app
def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    line = " ".join(str(message).split())[:300] or "bad request"
    return JSONResponse({"error": line}, status_code=status, headers=headers)


def _png(data: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(data, media_type="image/png", headers=headers or {"Cache-Control": "no-store"})


def _images(decoded: tuple[torch.Tensor, np.ndarray], codes: torch.Tensor, fmt: str) -> Response:
    """Decoded images as one PNG, H x Wn, side by side (``png``), or as arrays with their codes (``json``)."""
    pixels, u8 = decoded
    if fmt == "png":
        return _png(png_grey(u8[0] if len(u8) == 1 else np.concatenate(list(u8), axis=1)))
    return JSONResponse({"codes": codes.tolist(), "images": np.round(display(pixels), 4).tolist()})


class HostGuard:
    """Answer only requests whose Host header is one of ``hosts`` (port ignored): no DNS rebinding on loopback."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]):
        self.app, self.hosts = app, {h.lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            host = raw[1:raw.find("]")] if raw.startswith("[") else raw.split(":")[0]
            if host not in self.hosts:
                await _error(421, f"this server answers only for {', '.join(sorted(self.hosts))}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(run: str | os.PathLike, *, max_upload_bytes: int = 1_000_000, max_batch: int = 256,
               threads: int = 1, projection: str = "pca", allowed_hosts: Sequence[str] | None = None,
               test_limit: int | None = None) -> Starlette:
    """The explorer app for the run folder ``run``: loads the model and prepares the test set once, now.

    ``max_upload_bytes`` bounds an uploaded image and a JSON body, ``max_batch`` the codes of one decode
    request; ``threads`` is the number of torch CPU threads while serving; ``projection`` the map above 2-D
    (``pca``, ``umap``, ``tsne`` or ``auto``); ``allowed_hosts`` the Host names answered (None: any);
    ``test_limit`` a seeded slice of the test set (for quick tests). Raises ``AelabError`` for a bad run.
    """
    if max_upload_bytes < 1 or max_batch < 1 or threads < 1:
        raise ConfigError(f"the explorer's limits must be positive (upload {max_upload_bytes} bytes, batch "
                          f"{max_batch}, threads {threads})")
    ex = Explorer(run, projection=projection, threads=threads, test_limit=test_limit)
    batcher = DecodeBatcher(ex.model, max_rows=max(max_batch, 64))
    latent = ex.latent
    fmts = ("png", "json")

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def info(request: Request) -> Response:
        Query(request, ())
        hp = ex.model.hparams
        return JSONResponse({"run": ex.run.name, "path": str(ex.run), "model": hp, "latent": latent,
                             "dataset": ex.model.config.dataset_name, "shape": list(ex.model.image_shape),
                             "classes": ex.classes, "points": len(ex.labels),
                             "mean_ssim": round(float(ex.ssim.mean()), 4), "vae": ex.vae, "token": ex.token,
                             "map": {"method": ex.map.method, "description": ex.map.describe(),
                                     "exact_lift": ex.map.exact_lift, "cached": ex.map.cached},
                             "limits": {"max_upload_bytes": max_upload_bytes, "max_batch": max_batch,
                                        "max_steps": MAX_STEPS, "max_k": MAX_K, "max_abs_code": MAX_ABS_CODE}})

    async def projection_(request: Request) -> Response:
        Query(request, ())
        return Response(ex.projection_json, media_type="application/json", headers={"Cache-Control": "no-cache"})

    def path_index(request: Request) -> int:  # the route takes text: the router's int convertor could raise (a 500)
        return ex.check_index(whole_number(request.path_params["index"], "index"))

    async def point(request: Request) -> Response:
        Query(request, ())
        return JSONResponse(ex.point(path_index(request)))

    async def image(request: Request) -> Response:
        kind = Query(request, ("kind",)).choice("kind", ("input", "reconstruction"))
        i = path_index(request)
        etag = f'"{ex.token}-{i}-{kind}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return _png(ex.image_png(i, kind), headers)

    async def neighbours(request: Request) -> Response:
        q = Query(request, ("index", "k"))
        i = ex.check_index(q.integer("index", None, 0, len(ex.labels) - 1))
        k = q.integer("k", 8, 1, MAX_K)
        found = await run_in_threadpool(ex.neighbours, ex.codes[i], ex.flat[i], k, i)
        return JSONResponse({"index": i, "k": k, **found})

    async def decode_get(request: Request) -> Response:
        q = Query(request, ("z", "format"))
        z, fmt = parse_code_text(q.text("z"), latent), q.choice("format", fmts)
        return _images(await batcher.decode(z), z, fmt)

    async def decode_post(request: Request) -> Response:
        fmt = Query(request, ("format",)).choice("format", fmts)
        try:
            body = json.loads(await read_body(request, max_upload_bytes, "JSON body"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ApiError(400, 'the body is not JSON; send {"codes": [[...], ...]}') from None
        if not isinstance(body, dict) or "codes" not in body or set(body) - {"codes", "format"}:
            raise ApiError(400, 'send a JSON object {"codes": [[...], ...], "format": "png" | "json"}')
        if "format" in body:
            if body["format"] not in fmts:
                raise ApiError(400, "format must be png or json")
            fmt = body["format"]
        z = parse_codes(body["codes"], latent, max_batch)
        return _images(await batcher.decode(z), z, fmt)

    async def lift(request: Request) -> Response:
        q = Query(request, ("x", "y", "format"))
        xy = np.array([[q.number("x"), q.number("y")]])
        fmt = q.choice("format", fmts)
        z = checked(ex.map.lift(xy).astype(np.float64), "the lifted code")
        return _images(await batcher.decode(z), z, fmt)

    async def interpolate(request: Request) -> Response:
        q = Query(request, ("a", "b", "steps", "format"))
        n = len(ex.labels) - 1
        a, b = ex.check_index(q.integer("a", None, 0, n)), ex.check_index(q.integer("b", None, 0, n))
        steps, fmt = q.integer("steps", 10, 2, MAX_STEPS), q.choice("format", fmts)
        t = torch.linspace(0.0, 1.0, steps)[:, None]
        z = (1 - t) * ex.codes[a] + t * ex.codes[b]
        return _images(await batcher.decode(z), z, fmt)

    async def encode(request: Request) -> Response:
        invert = Query(request, ("invert",)).choice("invert", ("auto", "no", "yes"))
        data = await read_body(request, max_upload_bytes, "upload")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data = await _multipart_file(request, data, max_upload_bytes)
        return JSONResponse(await run_in_threadpool(ex.encode_upload, data, invert))

    async def sample(request: Request) -> Response:
        q = Query(request, ("n", "seed"))
        n, seed = q.integer("n", 8, 1, MAX_STEPS), q.integer("seed", 0, 0, 2**31 - 1)
        if not ex.vae:
            raise ApiError(400, f"this run's model ({ex.model.hparams.get('model')}) is not a VAE: it has no "
                                f"prior to sample from")
        z = torch.randn(n, latent, generator=torch.Generator().manual_seed(seed))
        return _images(await batcher.decode(z), z, "png")

    async def on_api_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, ApiError)
        return _error(err.status, err.message)

    async def on_input_error(request: Request, err: Exception) -> Response:
        return _error(400, str(err))

    async def on_http(request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        message = f"no such endpoint: {request.method} {request.url.path}" if err.status_code in (404, 405) \
            else err.detail
        return _error(err.status_code, message, dict(err.headers or {}))

    async def on_crash(request: Request, err: Exception) -> Response:
        log.error("explorer: %s %s failed", request.method, request.url.path, exc_info=err)
        return _error(500, f"internal error ({type(err).__name__}); the server's log has the details")

    api = [Route("/api/info", info), Route("/api/projection", projection_),
           Route("/api/points/{index}", point), Route("/api/images/{index}", image),
           Route("/api/neighbours", neighbours), Route("/api/decode", decode_get, methods=["GET"]),
           Route("/api/decode", decode_post, methods=["POST"]), Route("/api/lift", lift),
           Route("/api/interpolate", interpolate), Route("/api/encode", encode, methods=["POST"]),
           Route("/api/sample", sample)]
    app = Starlette(routes=[Route("/", page), *api, Mount("/static", StaticFiles(directory=STATIC))],
                    exception_handlers={ApiError: on_api_error, InputError: on_input_error, HTTPException: on_http,
                                        Exception: on_crash})
    app.state.explorer = ex
    if allowed_hosts is not None:
        app.add_middleware(HostGuard, hosts=allowed_hosts)
    return app


async def _multipart_file(request: Request, data: bytes, limit: int) -> bytes:
    """The first file of a multipart/form-data body already read into ``data``."""
    from starlette.datastructures import UploadFile

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=8, max_part_size=limit)
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "the multipart body holds no file; send the image in a file field")
        content = await files[0].read()
    finally:
        await form.close()
    if not content:
        raise ApiError(400, "the uploaded file is empty")
    return content


# ------------------------------------------------------------------------------------------ serving
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port); a port in use raises ``AelabError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP; without it every keep-alive
    # answer (headers and body written apart) waited ~40 ms for a delayed ACK (measured)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise AelabError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port or "
                         f"--host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(run: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True, *,
          threads: int = 1, projection: str = "pca", max_upload_bytes: int = 1_000_000, max_batch: int = 256,
          echo: Callable[[str], Any] = print) -> None:
    """Serve the explorer of ``run`` on ``host``:``port`` until Ctrl-C (then stop cleanly and return).

    Prints the URL (and a one-line warning when ``host`` is not loopback: the app has no authentication);
    opens it in the default browser when ``open_browser``. Raises ``AelabError`` for a bad run or a busy port.
    """
    sock = bind(host, port)  # before the slow start-up: a busy port fails at once
    t0 = time.perf_counter()
    local = is_loopback(host)
    try:
        echo(f"aelab explore: loading {run} and preparing its test set ...")
        app = create_app(run, max_upload_bytes=max_upload_bytes, max_batch=max_batch, threads=threads,
                         projection=projection,
                         allowed_hosts=(*LOOPBACK_NAMES, host.strip("[]")) if local else None)
    except KeyboardInterrupt:
        sock.close()
        echo("aelab explore: stopped before it started")
        return
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host.strip('[]')}]" if ":" in host else host)
    url = f"http://{shown}:{port}/"
    ex: Explorer = app.state.explorer
    echo(f"aelab explore: {len(ex.labels):,} test images, {ex.map.method} map, ready in "
         f"{time.perf_counter() - t0:.1f} s")
    if local:
        echo(f"aelab explore: serving {url} on {host} (loopback only: other machines cannot connect); Ctrl-C stops")
    else:
        print(f"WARNING: aelab explore listens on {host}:{port}, reachable from other machines, and has NO "
              f"authentication: anyone who can reach this port can use it", file=sys.stderr, flush=True)
        echo(f"aelab explore: serving {url}; Ctrl-C stops")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3))
    if open_browser:
        def opener() -> None:
            for _ in range(200):
                if server.started:
                    webbrowser.open(url)
                    return
                time.sleep(0.05)
        threading.Thread(target=opener, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn has already shut down; it re-raises the signal it caught
    finally:
        sock.close()
    echo("aelab explore: stopped")
