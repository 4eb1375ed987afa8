"""The memory allocator: glibc's malloc told to keep freed tensor memory (``keep_freed_memory``); torch-free."""

from __future__ import annotations

import ctypes
import functools
import os

# glibc's mallopt parameters (malloc.h); its largest mmap threshold on 64-bit is HEAP_MAX_SIZE / 2 = 32 MiB.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BELOW = 32 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed tensor memory for the next step instead of handing it back to the kernel.

    A training step frees and allocates the same tensors again (tens of MB each). glibc serves them by mmap and
    gives them back on free (or trims the heap), so every step takes them again page by page: ~20-47k page faults
    per step of the base model at batch 256, measured, and 1.2x slower steps than with the memory kept (fp32 and
    bf16, 2-core Xeon, benchmarks/README.md "Levers"). PyTorch's CPU tuning guide swaps in jemalloc or
    tcmalloc for this (TensorFlow brings its own allocator); those need LD_PRELOAD before the process starts, so
    aelab sets glibc's own two knobs at start-up: allocations up to ``KEEP_BELOW`` from the heap, and the heap
    never trimmed. The cost: memory freed stays with the process (its peak, not its sum). Applied once per
    process, on Linux with glibc; ``AELAB_MALLOC=system`` leaves malloc as it is. Returns whether it applied."""
    if os.environ.get("AELAB_MALLOC", "").lower() == "system":
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError, ValueError):  # no glibc, or no confstr name for it
        return False
