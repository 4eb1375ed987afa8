"""Shared pieces of the benchmark suite: the machine, the fp32 ceiling, FLOP counts and test-set SSIM.

Every module of the suite (and the Keras worker process) imports this one, so that both sides of a
comparison measure the same thing the same way.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch.utils.flop_counter import FlopCounterMode

from aelab.device import cores as usable_cpus
from aelab.device import cpu_model, load_average
from aelab.evaluation.metrics import ssim_per_image

TARGET_SSIM = 0.773  # the Keras base recipe's test SSIM after 10 epochs at latent 64 (DESIGN.md)


# ------------------------------------------------------------------------------------------ the machine
def fail(message: str) -> NoReturn:
    """A benchmark's usage error: one line, exit code 2."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) that name the script's ``--help``."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see 'benchmarks/{self.prog} --help'")


def write_results(out_dir: Path, stem: str, results: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> int:
    """``<stem>.json`` and its Markdown ``<stem>.md`` in ``out_dir``, each written whole (temporary file, then
    rename); the exit code: 1 when ``results["errors"]`` holds any, else 0."""
    from aelab.files import atomic_write_text, write_json

    path = write_json(out_dir / f"{stem}.json", results)
    atomic_write_text(out_dir / f"{stem}.md", render(results))
    print(f"wrote {path} and {path.with_suffix('.md')}", flush=True)
    return 1 if results["errors"] else 0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What DESIGN.md asks beside every figure: CPU model, cores, torch version and thread count."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "numpy": _version("numpy"),
        "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
        "keras": _version("keras"),
        "onnxruntime": _version("onnxruntime"),
        "scikit-image": _version("scikit-image"),
        "load_average_start": load_average(),
    }


def machine_slug(info: dict[str, Any]) -> str:
    """A short file-name-safe name of the machine: CPU model and usable CPUs, e.g. ``amd-epyc-2cpu``."""
    model = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", " ", info["cpu_model"].lower())
    slug = re.sub(r"[^a-z0-9]+", "-", model).strip("-")[:40].strip("-") or "cpu"
    return f"{slug}-{info['usable_cpus']}cpu"


# ------------------------------------------------------------------------------------------ the ceiling
def _rates(fn: Callable[[], Any], flops: float, seconds: float, repeats: int) -> list[float]:
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    reps = max(1, int(seconds / repeats / max(time.perf_counter() - t0, 1e-6)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        rates.append(flops * reps / (time.perf_counter() - t0) / 1e9)
    return rates


def matmul_gflops(n: int = 2048, seconds: float = 1.5, repeats: int = 5) -> dict[str, Any]:
    """The machine's measured fp32 matrix-multiply rate (GFLOP/s) for an n x n x n product.

    Two GEMM libraries torch ships: ``torch.mm`` (MKL) and a 1x1 channels-last convolution (oneDNN, the
    library behind torch's convolutions and TensorFlow's), each with torch's thread count and with one thread;
    ``repeats`` timed blocks each, the best block counts (the machine is shared, so the best is the least
    disturbed). ``gflops_best`` is the best all-threads rate of a kernel that passes the sanity check: N threads
    on N cores cannot do more than N times one thread's work, so a kernel measured above that (oneDNN's 1x1
    convolution read 418 GFLOP/s at 2 threads against 111.5 at one on a 2-core EPYC, 3.7x, while MKL scaled
    2.0x to 222.9) is reported under ``suspect`` and left out of the ceiling. Each kernel's output is also
    checked against float64 (``max_rel_error``), so that a kernel computing in a lower precision shows.
    """
    threads = torch.get_num_threads()
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    x = torch.randn(1, n, n // 32, 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    flops = 2.0 * n**3
    kernels = {"mkl_mm": lambda: torch.mm(a, b, out=c), "onednn_1x1_conv": lambda: torch.conv2d(x, w)}
    references = {"mkl_mm": lambda: (torch.mm(a, b), torch.mm(a.double(), b.double())),
                  "onednn_1x1_conv": lambda: (torch.conv2d(x, w), torch.conv2d(x.double(), w.double()))}
    out: dict[str, Any] = {"size": n, "threads": threads}
    best, suspect = 0.0, []
    for name, fn in kernels.items():
        all_threads = max(_rates(fn, flops, seconds / 4, repeats))
        torch.set_num_threads(1)
        try:
            one = max(_rates(fn, flops, seconds / 4, repeats))
        finally:
            torch.set_num_threads(threads)
        got, ref = references[name]()
        error = float((got.double() - ref).abs().max() / ref.abs().max())
        scaling = all_threads / one if one else None
        out[name] = {"all_threads": round(all_threads, 1), "one_thread": round(one, 1),
                     "scaling": None if scaling is None else round(scaling, 2), "max_rel_error": float(f"{error:.2g}")}
        if scaling is not None and scaling > threads * 1.1:
            suspect.append(f"{name}: {scaling:.2f}x on {threads} threads")
        else:
            best = max(best, all_threads)
    out["gflops_best"] = round(best, 1)
    out["suspect"] = suspect
    return out


def bf16_matmul_gflops(n: int = 2048, seconds: float = 1.5, repeats: int = 5) -> float | None:
    """The machine's measured bf16 matrix-multiply rate (GFLOP/s, torch.mm, all threads, best block), or None
    where the CPU has no native bf16 (the Trainer then trains in fp32 and this ceiling does not apply)."""
    from aelab.device import native_bf16

    if not native_bf16(torch.device("cpu")):
        return None
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    c = torch.empty(n, n, dtype=torch.bfloat16)
    return round(max(_rates(lambda: torch.mm(a, b, out=c), 2.0 * n**3, seconds, repeats)), 1)


# ------------------------------------------------------------------------------------------ FLOPs
def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations torch's FlopCounterMode attributes to ``fn`` (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def model_flops(model: torch.nn.Module, part: str = "forward", batch: int = 64) -> float:
    """FLOPs per image: ``forward`` (the whole autoencoder), ``encode`` or ``train`` (forward + backward).

    Counted on a fresh copy in NCHW so that the count does not depend on the memory format; only
    convolutions and matrix multiplies are counted (elementwise work, pooling and the optimizer are not).
    """
    import copy

    m = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).train(part == "train")
    x = torch.rand(batch, 1, 28, 28)
    if part == "encode":
        with torch.no_grad():
            flops = count_flops(lambda: m.encode(x))
    elif part == "forward":
        with torch.no_grad():
            flops = count_flops(lambda: m(x))
    else:
        def step() -> None:
            torch.nn.functional.binary_cross_entropy_with_logits(m(x), x).backward()
        flops = count_flops(step)
    return flops / batch


def ceiling_share(images_per_s: float | None, flops_per_image: float, gflops: float) -> float | None:
    """The share of the measured fp32 matmul rate that ``images_per_s`` x ``flops_per_image`` reaches."""
    if not images_per_s or not gflops:
        return None
    return round(images_per_s * flops_per_image / (gflops * 1e9), 4)


# ------------------------------------------------------------------------------------------ quality
def mean_ssim(pixels: torch.Tensor, target: torch.Tensor, batch: int = 2000) -> float:
    """The headline SSIM (DESIGN.md) of reconstructions ``pixels`` against ``target``, both (n,1,28,28)."""
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            s = ssim_per_image(pixels[i:i + batch].to(torch.float64), target[i:i + batch].to(torch.float64))
            total += float(s.sum())
    return total / max(len(pixels), 1)


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min and max of a list of per-round figures (all rounded)."""
    if not values:
        return {"median": None, "min": None, "max": None, "rounds": []}
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "rounds": [round(v, 1) for v in values]}


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if not a or not b:
        return None
    return round(a / b, digits)


# ------------------------------------------------------------------------------------------ time to quality
class Judge:
    """The clock and the SSIM readings of one time-to-quality contender.

    The clock is wall time since the contender started, minus the time spent judging. ``epoch_end`` reads
    the test SSIM after each epoch; ``step`` is called after every optimizer step and reads it at the first
    step past each ``every``-epoch mark inside an epoch (0.25: after a quarter, half and three quarters of
    each epoch; 0: epoch ends only), so that the time to target is resolved finer than an epoch, the same for
    both contenders; and at the first step after each budget mark, returning True once the cap (the last
    mark) is reached so that the contender stops there.
    """

    def __init__(self, evaluate: Callable[[], float], budgets_s: list[float], every: float = 0.0):
        self.evaluate, self.marks = evaluate, sorted(budgets_s)
        self.every = every
        self.next_mark, self.spent = 0, 0.0
        self.next_fraction = every if every > 0 else float("inf")
        self.readings: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def wall(self) -> float:
        return time.perf_counter() - self.t0 - self.spent

    def read(self, at: str, epochs: float, **extra: Any) -> None:
        wall = self.wall()
        t = time.perf_counter()
        ssim = self.evaluate()
        self.spent += time.perf_counter() - t
        self.readings.append({"at": at, "epochs": round(epochs, 2), "wall_s": round(wall, 2),
                              "ssim": round(ssim, 4), **extra})

    def step(self, epochs: float) -> bool:
        wall = self.wall()
        if self.next_mark < len(self.marks) and wall >= self.marks[self.next_mark]:
            while self.next_mark < len(self.marks) and wall >= self.marks[self.next_mark]:
                self.next_mark += 1
            self.read(f"{self.marks[self.next_mark - 1] / 60:g} min", epochs)
        elif epochs >= self.next_fraction:
            passed = self.next_fraction
            while passed + self.every <= epochs:
                passed += self.every  # the last mark passed (several when an epoch has few steps)
            if abs(epochs - round(epochs)) > 1e-9:  # a whole epoch is read by epoch_end
                self.read(f"{passed:g} epochs", epochs)
        while self.next_fraction <= epochs:
            self.next_fraction += self.every
        return wall >= self.marks[-1]

    def epoch_end(self, epoch: int, **extra: Any) -> None:
        self.read("epoch end", float(epoch), **extra)
