"""A bounded load test of ``aelab explore`` on loopback: concurrent clients decoding single latent points.

    .venv/bin/python benchmarks/bench_explorer.py                       # trains a small run first (~30 s)
    .venv/bin/python benchmarks/bench_explorer.py --run runs/quick --clients 16 --requests 5000
    .venv/bin/python benchmarks/bench_explorer.py --smoke --out /tmp/b  # 300 requests: checks the script runs

The real server (``aelab.explorer.serve``, uvicorn) runs in its own process on 127.0.0.1 with a free port;
this process is the load: ``--clients`` keep-alive HTTP/1.1 connections (asyncio, raw sockets: ~50 us of
client work per request, so that the client is not what is measured) that together send ``--requests``
``GET /api/decode?z=...`` requests, each for a different latent point (a test image's code plus noise), and
read each PNG to its last byte. Latency is from the first byte sent to the last byte received. A warm-up of
200 requests is not counted; one client alone then sends 500 (the unloaded latency). Nothing but 127.0.0.1
is ever contacted, and the server is stopped (SIGINT, as Ctrl-C) at the end.

Writes ``<out>/<date>-<machine>-explorer.json`` and ``.md`` (``-smoke`` added for ``--smoke``): requests/s,
p50/p90/p99/max latency, errors, the server's CPU time per request, and the machine (bench_common).
Goal on 2 cores: zero errors, p50 <= 10 ms, p99 <= 50 ms, >= 500 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import load_average, machine_info, machine_slug  # noqa: E402

HOST = "127.0.0.1"  # loopback only, by design
GOALS = {"p50_ms": 10.0, "p99_ms": 50.0, "requests_per_s": 500.0, "errors": 0}


# ------------------------------------------------------------------------------------------ the server
def start_server(run: Path, threads: int) -> tuple[subprocess.Popen, int]:
    code = (f"from aelab.explorer import serve; serve({str(run)!r}, host={HOST!r}, port=0, open_browser=False, "
            f"threads={threads})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"  server: {line.rstrip()}", flush=True)
        m = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
        if m:
            return proc, int(m.group(1))
    raise SystemExit(f"the explorer did not start (exit code {proc.wait()})")


def stop_server(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return (out or "").strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------ the load
class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(port: int, paths: list[str], clients: int) -> dict[str, Any]:
    """Send ``paths`` over ``clients`` connections, each taking the next path when its last answer is in."""
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        conn = Connection(port)
        try:
            while next_index < len(paths):
                path = paths[next_index]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    status, body = await conn.get(path)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200 or not body.startswith(b"\x89PNG"):
                    errors.append(f"HTTP {status}: {body[:120]!r}")
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000.0
    return {"requests": len(paths), "clients": clients, "wall_s": round(wall, 3),
            "requests_per_s": round(len(paths) / wall, 1), "errors": len(errors), "error_samples": errors[:5],
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def decode_paths(port: int, n: int, seed: int = 0) -> tuple[list[str], int]:
    """``n`` decode URLs, each a different latent point: a random test image's code plus a little noise."""
    async def fetch() -> tuple[dict[str, Any], list[list[float]]]:
        conn = Connection(port)
        try:
            info = json.loads((await conn.get("/api/info"))[1])
            rng = np.random.default_rng(seed)
            picks = rng.choice(info["points"], size=64, replace=False)
            codes = [json.loads((await conn.get(f"/api/points/{int(i)}"))[1])["code"] for i in picks]
        finally:
            conn.close()
        return info, codes

    info, codes = asyncio.run(fetch())
    base = np.array(codes, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    z = base[rng.integers(0, len(base), n)] + rng.normal(0.0, 0.1 * base.std(0) + 1e-6, (n, base.shape[1]))
    return ["/api/decode?z=" + ",".join(f"{v:.5g}" for v in row) for row in z], info["latent"]


# ------------------------------------------------------------------------------------------ the run
def server_stack() -> dict[str, Any]:
    """What serves: uvicorn picks httptools and uvloop when installed (uvicorn[standard]), else h11 and asyncio."""
    import importlib.metadata
    import importlib.util

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"uvicorn": version("uvicorn"), "starlette": version("starlette"),
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"}


def train_run(folder: Path) -> Path:
    exe = Path(sys.executable).with_name("aelab")
    out = folder / "explore-bench"
    cmd = [str(exe), "train", "--train-limit", "2000", "--epochs", "1", "--latent", "16", "--threads", "1",
           "--no-report", "--no-eval", "-q", "--out", str(out)]
    print("training a small run:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return out


def render(r: dict[str, Any]) -> str:
    m, lo, one, st = r["machine"], r["loaded"], r["single_client"], r["server_stack"]
    ok = "met" if r["goals_met"] else "NOT met"
    rows = [("requests/s", lo["requests_per_s"], one["requests_per_s"], f">= {GOALS['requests_per_s']:g}"),
            ("p50 latency (ms)", lo["p50_ms"], one["p50_ms"], f"<= {GOALS['p50_ms']:g}"),
            ("p90 latency (ms)", lo["p90_ms"], one["p90_ms"], ""),
            ("p99 latency (ms)", lo["p99_ms"], one["p99_ms"], f"<= {GOALS['p99_ms']:g}"),
            ("max latency (ms)", lo["max_ms"], one["max_ms"], ""),
            ("errors", lo["errors"], one["errors"], "0")]
    table = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    return f"""# aelab explore: decode load test ({r['date']})

`{r['command']}`

{lo['requests']:,} `GET /api/decode?z=...` requests (one latent point each, every one different, PNG answer)
from {lo['clients']} concurrent keep-alive clients on 127.0.0.1, after {r['warmup']} warm-up requests; then
{one['requests']} from one client alone. Server: `aelab.explorer.serve` (Starlette on uvicorn), one process,
{r['server_threads']} torch thread(s), {st['http']} + {st['loop']} (uvicorn {st['uvicorn']}, Starlette
{st['starlette']}); model {r['model']}, latent {r['latent']}. Goals: **{ok}**.

| figure | {lo['clients']} clients | 1 client | goal |
|---|---|---|---|
{table}

Server CPU time per request (16 clients): {r['server_cpu_ms_per_request']} ms.

Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}, Python {m['python']}; load average
{m['load_average_start']} at the start, {r['load_average_end']} at the end (the load generator runs on the same
machine as the server).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="load test of aelab explore on 127.0.0.1")
    p.add_argument("--run", type=Path, default=None, help="a trained run folder (default: train a small one)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (default 1)")
    p.add_argument("--smoke", action="store_true", help="300 requests, 4 clients: checks the script runs")
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    if a.smoke:
        a.requests, a.clients = 300, 4
    from aelab.files import atomic_write_text

    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run or train_run(Path(tmp))
        proc, port = start_server(run, a.threads)
        try:
            paths, latent = decode_paths(port, 200 + a.requests + 500)
            asyncio.run(load(port, paths[:200], a.clients))  # warm-up, not counted
            cpu0 = cpu_seconds(proc.pid)
            loaded = asyncio.run(load(port, paths[200:200 + a.requests], a.clients))
            cpu = cpu_seconds(proc.pid) - cpu0
            single = asyncio.run(load(port, paths[200 + a.requests:], 1))
            hparams = json.loads(asyncio.run(_get(port, "/api/info")))["model"]
        finally:
            print(f"  server: {stop_server(proc)}")
    goals_met = (loaded["errors"] == 0 and single["errors"] == 0 and loaded["p50_ms"] <= GOALS["p50_ms"]
                 and loaded["p99_ms"] <= GOALS["p99_ms"] and loaded["requests_per_s"] >= GOALS["requests_per_s"])
    command = " ".join(["benchmarks/bench_explorer.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"format": "aelab-bench-explorer-1", "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
              "command": command.strip(), "machine": info, "load_average_end": load_average(),
              "server_threads": a.threads, "server_stack": server_stack(), "model": hparams.get("model"),
              "latent": latent,
              "warmup": 200, "loaded": loaded, "single_client": single, "goals": GOALS, "goals_met": goals_met,
              "server_cpu_ms_per_request": round(1000.0 * cpu / a.requests, 3), "smoke": a.smoke}
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}-explorer" + ("-smoke" if a.smoke else "")
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(a.out / f"{stem}.md", render(result))
    print(render(result))
    print(f"wrote {a.out / stem}.json and .md")
    return 0 if loaded["errors"] == 0 and single["errors"] == 0 else 1


async def _get(port: int, path: str) -> bytes:
    conn = Connection(port)
    try:
        return (await conn.get(path))[1]
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
