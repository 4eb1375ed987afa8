"""Time to quality: wall time until test SSIM >= 0.773 at latent 64, aelab's default recipe vs the Keras one.

Both contenders train on the same training split and are judged on the same test images with the same SSIM
(``bench_common.mean_ssim``, DESIGN.md's definition) after every epoch. The clock is wall time from before
the model is built (aelab: ``Trainer`` construction, its validation passes and checkpoint writes are in it;
Keras: build, compile and ``fit``), minus the seconds the benchmark itself spends judging. Each contender
stops at its own end (aelab: the preset's epochs or early stopping; Keras: 10 epochs) or before an epoch that
would overrun the time cap. The SSIM "at T minutes" is that of the last epoch finished within T.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import mean_ssim, ratio
from bench_keras import KerasPeer, PeerError, temp_npy

from aelab.config import RunConfig, dump_yaml, resolve
from aelab.data import DataBundle, to_float
from aelab.evaluate import reconstruct_all
from aelab.runs import Run, atomic_write_text
from aelab.train import LoopState, Trainer


def train_aelab(cfg: RunConfig, bundle: DataBundle, folder: Path) -> dict[str, Any]:
    """Train ``cfg`` into ``folder`` (a run folder kept for the evaluation and encoding benchmarks)."""
    target = to_float(bundle.test.images)
    history: list[dict[str, Any]] = []
    spent = {"eval": 0.0}
    holder: dict[str, Trainer] = {}
    t0 = time.perf_counter()

    def judge(st: LoopState) -> None:
        t_end = time.perf_counter()
        ssim = mean_ssim(reconstruct_all(holder["trainer"].model, bundle.test.images), target)
        row = st.history[-1]
        history.append({"epoch": st.epoch, "wall_s": round(t_end - t0 - spent["eval"], 2),
                        "epoch_s": row["seconds"], "loss": round(row["train_loss"], 5), "ssim": round(ssim, 4)})
        spent["eval"] += time.perf_counter() - t_end

    run = Run(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config_file, dump_yaml(cfg))
    holder["trainer"] = Trainer(cfg, run, bundle=bundle, progress=False, on_epoch_end=judge)
    state = holder["trainer"].fit()
    return {"history": history, "stopped": state.stopped, "eval_seconds": round(spent["eval"], 2),
            "run": str(folder)}


def readings(history: list[dict[str, Any]], target: float, budgets_s: list[float]) -> dict[str, Any]:
    reached = next((h for h in history if h["ssim"] >= target), None)
    at = {}
    for b in budgets_s:
        done = [h for h in history if h["wall_s"] <= b]
        at[f"{b / 60:g}"] = done[-1]["ssim"] if done else None
    return {"seconds_to_target": reached["wall_s"] if reached else None,
            "epochs_to_target": reached["epoch"] if reached else None,
            "final_ssim": history[-1]["ssim"] if history else None,
            "wall_s": history[-1]["wall_s"] if history else None,
            "ssim_at_minutes": at}


def run_quality(bundle: DataBundle, *, budgets_min: list[float], target: float, threads: int,
                keras: KerasPeer | None, keras_skip: str | None, tmp: str, smoke: bool) -> dict[str, Any]:
    cap_s = max(budgets_min) * 60
    overrides: dict[str, Any] = dict(threads=threads, max_minutes=max(budgets_min))
    if smoke:
        overrides.update(epochs=1)
    cfg = resolve("default", overrides=overrides)
    folder = Path(tempfile.mkdtemp(prefix="quality-", dir=tmp))
    ours = train_aelab(cfg, bundle, folder)
    budgets_s = [m * 60 for m in budgets_min]
    out: dict[str, Any] = {
        "target_ssim": target, "latent": cfg.latent, "time_cap_minutes": max(budgets_min),
        "budgets_minutes": budgets_min, "train_images": len(bundle.train), "test_images": len(bundle.test),
        "threads": threads,
        "aelab": {"recipe": f"preset default: {cfg.model}, loss {cfg.loss}, {cfg.optimizer} lr {cfg.lr:g}, "
                            f"{cfg.schedule}, batch {cfg.batch_size}, up to {cfg.epochs} epochs",
                  **readings(ours["history"], target, budgets_s), **ours},
        "notes": [],
    }
    if keras is None:
        out["notes"].append(keras_skip or "Keras peer not run")
        out["keras"] = None
    else:
        epochs = 1 if smoke else 10
        try:
            k = keras.call("quality", train=temp_npy(tmp, "q-train", bundle.train.images),
                           test=temp_npy(tmp, "q-test", bundle.test.images), epochs=epochs, cap_s=cap_s,
                           batch=256, latent=cfg.latent)
            out["keras"] = {"recipe": f"Keras base recipe: conv, BCE, Adam 1e-3, batch 256, up to {epochs} epochs",
                            **readings(k["history"], target, budgets_s), **k}
        except PeerError as err:
            out["keras"] = None
            out["notes"].append(f"Keras failed: {err}")
    a, k = out["aelab"], out["keras"]
    if k:
        if a["seconds_to_target"] and k["seconds_to_target"]:
            out["time_ratio"] = ratio(a["seconds_to_target"], k["seconds_to_target"], 3)
        elif a["seconds_to_target"] and k["wall_s"]:
            # Keras did not get there within its run: our share of its time is below this bound
            out["time_ratio_upper_bound"] = ratio(a["seconds_to_target"], k["wall_s"], 3)
            out["notes"].append(f"Keras did not reach SSIM {target} in {k['wall_s']:.0f} s "
                                f"({len(k['history'])} epochs, {k['stopped']}); the time ratio is an upper bound")
    if not a["seconds_to_target"]:
        out["notes"].append(f"aelab's default recipe did not reach SSIM {target} within the run")
    return out
