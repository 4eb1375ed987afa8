"""Encoding throughput of a trained encoder: aelab's ``encode_all``, the tutorial DataLoader loop, and the
encoder exported with ``torch.onnx.export`` run by ONNX Runtime, on the same test images.

Every contender gets uint8 images and includes their scaling to float in its time. Each is timed
``repeats`` times after a warm-up pass; the best pass is reported with the median beside it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import ceiling_share, model_flops, ratio
from bench_tutorial import encode_with_loader

from aelab.data import DataBundle
from aelab.evaluation import encode_all
from aelab.models import Autoencoder


def _rates(fn: Any, n: int, repeats: int) -> dict[str, Any]:
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return {"images_per_s": round(max(rates), 1), "median_images_per_s": round(statistics.median(rates), 1)}


def export_onnx(model: Autoencoder, path: Path) -> None:
    """``model.encoder`` to ONNX with a dynamic batch dimension (the exporter's chatter silenced)."""
    example = torch.rand(4, 1, 28, 28)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        _export(model, example, path)
    finally:
        quiet.setLevel(level)


def _export(model: Autoencoder, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.encoder.eval(), (example,), str(path), input_names=["images"],
                          output_names=["codes"], dynamic_axes={"images": {0: "batch"}, "codes": {0: "batch"}})


def run_encoding(model: Autoencoder, bundle: DataBundle, *, threads: int, repeats: int, gflops: float,
                 tmp: str, source: str) -> dict[str, Any]:
    model.eval()
    images, labels = bundle.test.images, bundle.test.labels
    n = len(images)
    flops = model_flops(model, "encode")
    reference = encode_all(model, images)
    out: dict[str, Any] = {"images": n, "model": model.hparams, "source": source, "threads": threads,
                           "encode_flops_per_image": round(flops), "contenders": {}, "notes": []}
    c = out["contenders"]
    c["aelab"] = {"what": "aelab.evaluation.encode_all (batch norm folded, channels-last, batches of 256)",
                  **_rates(lambda: encode_all(model, images), n, repeats)}
    c["tutorial"] = {"what": "per-sample Dataset + DataLoader (batch 256) under torch.no_grad",
                     **_rates(lambda: encode_with_loader(model, images, labels), n, max(1, repeats // 2))}
    try:
        import onnxruntime as ort

        path = Path(tmp) / "encoder.onnx"
        export_onnx(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        raw = images.numpy()

        def ort_encode() -> np.ndarray:
            parts = []
            for i in range(0, n, 2000):
                x = (raw[i:i + 2000].astype(np.float32) / 255.0)[:, None]
                parts.append(session.run(None, {"images": x})[0])
            return np.concatenate(parts)

        diff = float(np.abs(ort_encode() - reference.numpy()).max())
        c["onnxruntime"] = {"what": f"torch.onnx.export(model.encoder) in ONNX Runtime {ort.__version__}",
                            "max_abs_difference": diff, **_rates(ort_encode, n, repeats)}
    except Exception as err:  # noqa: BLE001 - an export that fails is a finding, not a crash
        out["notes"].append(f"ONNX path failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    for v in c.values():
        v["fp32_ceiling_share"] = ceiling_share(v["images_per_s"], flops, gflops)
    ours = c["aelab"]["images_per_s"]
    out["ratio_vs_tutorial"] = ratio(ours, c["tutorial"]["images_per_s"])
    if "onnxruntime" in c:
        out["onnxruntime_vs_aelab"] = ratio(c["onnxruntime"]["images_per_s"], ours)
    return out
