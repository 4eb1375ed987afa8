"""A torch.profiler profile of one training epoch of N steps as the Trainer runs it, summarised by operator.

The Trainer trains two epochs over ``steps`` batches of real images; the profiler records the second
(after a warm-up epoch), from the end of the first ``on_epoch_end`` to the end of the second: its training
steps, its (small) validation pass and its checkpoint write. Rows are sorted by self CPU time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench_throughput import slice_bundle
from torch.profiler import ProfilerActivity, profile

from aelab.config import resolve
from aelab.data import DataBundle
from aelab.runs import Run
from aelab.training import LoopState, Trainer


def profile_training(bundle: DataBundle, *, preset: str, steps: int, threads: int, top: int,
                     tmp: str) -> dict[str, Any]:
    cfg = resolve(preset, overrides=dict(epochs=2, patience=0, threads=threads))
    data = slice_bundle(bundle, steps * cfg.batch_size)
    prof = profile(activities=[ProfilerActivity.CPU])
    clock: dict[str, float] = {}

    def on_epoch_end(st: LoopState) -> None:
        if st.epoch == 1:
            clock["t0"] = time.perf_counter()
            prof.start()
        else:
            prof.stop()
            clock["t1"] = time.perf_counter()
            clock["images_per_s"] = st.history[-1]["images_per_s"]

    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        Trainer(cfg, Run(Path(folder)), bundle=data, progress=False, on_epoch_end=on_epoch_end).fit()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
             "share": round(e.self_cpu_time_total / total, 4), "calls": int(e.count),
             "cpu_total_ms": round(e.cpu_time_total / 1000, 1)} for e in events[:top]]
    return {"preset": preset, "model": cfg.model, "batch": cfg.batch_size, "steps": len(range(0, len(data.train),
            cfg.batch_size)), "threads": threads, "wall_s": round(clock["t1"] - clock["t0"], 2),
            "images_per_s_while_profiled": clock["images_per_s"],
            "self_cpu_total_ms": round(total / 1000, 1), "top_ops": rows}
