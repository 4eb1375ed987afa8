"""Where and how torch computes: the device, the training precision, CPU cores and thread limits."""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from aelab.errors import RunError
from aelab.files import user_cache_dir, write_json


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA, then MPS, then the CPU; an explicit name is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """True where bf16 arithmetic runs at full speed: a CUDA GPU with bf16 units (Ampere and later), an x86 CPU
    with AVX512-BF16 or AMX, or an ARM CPU whose oneDNN build reports bf16. (oneDNN's own x86 check accepts any
    AVX-512 CPU and would emulate bf16 on Skylake to Ice Lake, slower than fp32.)"""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu":
        return False
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware has it natively and it trains faster there (``bf16_pays``), else
    fp32; an explicit choice is kept."""
    if name == "auto":
        return "bf16" if native_bf16(device) and bf16_pays(device) else "fp32"
    if name == "bf16" and not native_bf16(device):
        warnings.warn(f"--precision bf16 on {device.type} without native bf16 support is emulated and slow; "
                      f"--precision fp32 is faster here", stacklevel=2)
    return name


PROBE_GAIN = 1.1  # bf16 must train at least this much faster than fp32 to be chosen by ``auto``
BUSY_LIMIT = 0.25  # cores other processes may keep busy during the probe for its verdict to be remembered
_VERDICTS: dict[str, dict[str, Any]] = {}


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast trains faster than fp32 here: measured once per machine, then remembered.

    The CPU's flags say it *has* bf16 instructions, not that torch's kernels run faster with them: on a 2-core
    AMD EPYC (AVX512-BF16) aelab's bf16 training ran ~2x its fp32; on a 2-core Intel Xeon with AVX512-BF16
    and no AMX it ran 0.87x (benchmarks/results/2026-11-23-intel-xeon-2cpu.md), where ``auto`` picking bf16
    was a slowdown. So on a CPU ``auto`` times one small convolutional training step in each precision
    (alternating, best of 4, about a second) and picks bf16 only when it is ``PROBE_GAIN`` times faster. The
    verdict is kept per CPU model and instruction set (AMX or not: one VM model name covers both), torch version
    and thread count in the user cache (``precision.json``), unless other processes kept more than
    ``BUSY_LIMIT`` cores busy while it was timed (a probe under load once chose fp32 on an AMX machine where
    bf16 trains the base model 2.2x faster, and the verdict stuck); a GPU with bf16 units is trusted without a probe."""
    if device.type != "cpu":
        return True
    key = f"{cpu_model()}|{cpu_isa()}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    if key not in _VERDICTS:
        path = user_cache_dir() / "precision.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        if not isinstance(saved, dict) or not isinstance(saved.get(key), dict) or "bf16" not in saved[key]:
            saved = saved if isinstance(saved, dict) else {}
            saved[key] = probe_precisions()
            # timed while other processes used the cores: it decides this run only, the next one measures again
            if (saved[key].get("others_busy_cores") or 0.0) <= BUSY_LIMIT:
                try:
                    write_json(path, saved)
                except OSError:  # a read-only home: measure again next time
                    pass
        _VERDICTS[key] = saved[key]
    return bool(_VERDICTS[key]["bf16"])


def probe_precisions(batch: int = 64, rounds: int = 4) -> dict[str, Any]:
    """Seconds of one training step (forward, backward) of a small conv block on 28x28 images in fp32 and under
    bf16 autocast, alternating, best of ``rounds``; and the verdict ``bf16``: whether bf16 is faster by
    ``PROBE_GAIN``. The block is the shape of aelab's models: 3x3 convs 1-32-64 (stride 2), a transposed conv
    back, ReLU, channels-last as the Trainer runs them."""
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.ConvTranspose2d(64, 32, 4, 2, 1),
        torch.nn.ReLU(), torch.nn.Conv2d(32, 1, 3, padding=1)).to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, 28, 28, generator=gen).to(memory_format=torch.channels_last)

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        torch.nn.functional.mse_loss(out.float(), x).backward()
        return time.perf_counter() - t

    best = {"fp32": float("inf"), "bf16": float("inf")}
    before = _cpu_jiffies()
    for r in range(rounds + 1):  # round 0 creates the oneDNN primitives: not counted
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            seconds = step(name == "bf16")
            if r:
                best[name] = min(best[name], seconds)
    return {"fp32_s": round(best["fp32"], 5), "bf16_s": round(best["bf16"], 5),
            "bf16": best["fp32"] >= PROBE_GAIN * best["bf16"], "measured": time.strftime("%Y-%m-%d %H:%M"),
            "others_busy_cores": others_busy(before, _cpu_jiffies())}


def others_busy(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    """Cores that processes other than this one kept busy between two ``_cpu_jiffies`` readings (None: unknown)."""
    if before is None or after is None:
        return None
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    if total <= 0:
        return None
    return round(max(0.0, (busy - own) / total * (os.cpu_count() or 1)), 2)


def cpu_isa() -> str:
    """The CPU's vector instruction level as torch sees it, with the bf16 units: e.g. ``AVX512+amx``."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
        extra = [name for name, probe in (("amx", torch.cpu._is_amx_tile_supported),
                                           ("avx512bf16", torch.cpu._is_avx512_bf16_supported)) if probe()]
    except (AttributeError, RuntimeError):
        return "unknown ISA"
    return "+".join([isa, *extra])


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first "model name" on Linux, else what ``platform`` says): the one
    reader of it, for the precision probe's key, the study's machine record, the tracked facts, the benchmarks."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (rounded to 0.01), None where the system has none: what the study and
    the benchmarks record beside their timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cores() -> int:
    """CPU cores this process may run on (its affinity mask on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def thread_limits(n: int | None) -> Iterator[None]:
    """Use ``n`` threads in torch, BLAS and OpenMP pools inside the block (``None``: leave them as they are)."""
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ sharing the cores
def _cpu_jiffies() -> tuple[int, int, int] | None:
    """(busy jiffies of the whole machine, all jiffies, this process's jiffies) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        with open("/proc/self/stat") as fh:
            own = fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8]), int(own[11]) + int(own[12])  # utime + stime


class CoreShare:
    """How many threads this process should use now: the usable cores that other processes leave free.

    Two trainings that each take every core collapse on a small machine: with 2 threads each on 2 cores, a
    batch took ~6 s instead of ~0.1 s (measured; the OpenMP threads spin while they wait for each other).
    ``threads()`` measures, from /proc/stat, how many cores the rest of the machine kept busy since the last
    call (this process's own use subtracted) and returns the cores left over, at least 1. Written by hand
    because it is two reads of /proc (psutil, the usual library, is not a dependency of aelab); where /proc
    is missing it returns every core.
    """

    def __init__(self, limit: int | None = None):
        self.cores = limit or cores()
        self.last = _cpu_jiffies()
        self.since = time.monotonic()

    def threads(self, wait: float = 0.0) -> int:
        """The threads to use now, from the machine's load since the last call (``wait``: at least that many
        seconds since then, sleeping the rest: a shorter window is too coarse for /proc's 10 ms ticks)."""
        if wait > 0:
            time.sleep(max(0.0, wait - (time.monotonic() - self.since)))
        now = _cpu_jiffies()
        if now is None or self.last is None:
            return self.cores
        others = others_busy(self.last, now)
        self.last, self.since = now, time.monotonic()
        if others is None:
            return self.cores
        return max(1, min(self.cores, int(self.cores - others + 0.5)))
