"""Time to quality: wall time until test SSIM >= 0.773 at latent 64, aelab's default recipe vs the Keras one.

Both contenders train on the same training split and are judged on the same test images with the same SSIM
(``bench_common.mean_ssim``, DESIGN.md's definition) by the same ``Judge``: after every epoch, and at the
first optimizer step after each time budget (2, 5, 10 minutes by default), and every quarter epoch
(``--judge-every``) so that the time to target is not rounded up to a whole epoch. The clock is wall time from
before the model is built (aelab: ``Trainer`` construction, its validation passes and checkpoint writes are in
it; Keras: build, compile and ``fit``), minus the seconds spent judging. Each contender stops at its own end
(aelab: the preset's epochs or early stopping; Keras: 10 epochs) or at the last budget, mid-epoch if need be
(aelab: a step hook on its optimizer; Keras: ``stop_training`` after a batch). The time to target is the
first reading at or above the target; the SSIM "at T minutes" is the reading taken at T (or the last one
before it when the contender finished earlier).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench_common import Judge, mean_ssim, ratio
from bench_keras import KerasPeer, PeerError, temp_npy

from aelab.config import RunConfig, dump_yaml, resolve
from aelab.data import DataBundle, to_float
from aelab.evaluation import reconstruct_all
from aelab.files import atomic_write_text
from aelab.models import Autoencoder, build_model
from aelab.runs import Run
from aelab.training import LoopState, Trainer


class CapReached(Exception):
    """Raised from the optimizer's step hook to end aelab's training at the time cap."""


def plain_copy(model: Autoencoder) -> Autoencoder:
    """The trained weights in a fresh model, as ``Run.load_model`` gives it to a user (eval mode)."""
    hp = dict(model.hparams)
    fresh = build_model(hp.pop("model"), hp.pop("latent"), **hp)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def train_aelab(cfg: RunConfig, bundle: DataBundle, folder: Path, budgets_s: list[float], every: float = 0.0
                ) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``folder``, judged as the module docstring says."""
    target = to_float(bundle.test.images)
    box: dict[str, Any] = {}

    def evaluate() -> float:
        model = box["trainer"].model
        was_training = model.training
        ssim = mean_ssim(reconstruct_all(model, bundle.test.images), target)
        model.train(was_training)
        return ssim

    judge = Judge(evaluate, budgets_s, every)

    def on_step(*_: Any) -> None:
        st, tr = box["trainer"].state, box["trainer"]
        if judge.step(st.epoch + (st.batch + 1) / tr.steps_per_epoch):
            raise CapReached

    def on_epoch_end(st: LoopState) -> None:
        row = st.history[-1]
        judge.epoch_end(st.epoch, loss=round(row["train_loss"], 5), images_per_s=row["images_per_s"])

    run = Run(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config_file, dump_yaml(cfg))
    box["trainer"] = Trainer(cfg, run, bundle=bundle, progress=False, on_epoch_end=on_epoch_end)
    box["trainer"].opt.register_step_post_hook(on_step)
    try:
        stopped = box["trainer"].fit().stopped
    except CapReached:
        stopped = "time-cap"
    return {"readings": judge.readings, "stopped": stopped, "eval_seconds": round(judge.spent, 2),
            "precision": box["trainer"].precision, "model": plain_copy(box["trainer"].model), "run": run}


def outcome(readings: list[dict[str, Any]], target: float, budgets_min: list[float]) -> dict[str, Any]:
    reached = next((r for r in readings if r["ssim"] >= target), None)
    at: dict[str, float | None] = {}
    for b in budgets_min:
        done = [r for r in readings if r["wall_s"] <= b * 60 or r["at"] == f"{b:g} min"]
        at[f"{b:g}"] = done[-1]["ssim"] if done else None
    return {"seconds_to_target": reached["wall_s"] if reached else None,
            "epochs_to_target": reached["epochs"] if reached else None,
            "final_ssim": readings[-1]["ssim"] if readings else None,
            "wall_s": readings[-1]["wall_s"] if readings else None,
            "epochs": readings[-1]["epochs"] if readings else None,
            "ssim_at_minutes": at}


def run_quality(bundle: DataBundle, *, budgets_min: list[float], target: float, threads: int,
                keras: KerasPeer | None, keras_skip: str | None, tmp: str, smoke: bool, every: float = 0.25
                ) -> dict[str, Any]:
    budgets_s = [m * 60 for m in budgets_min]
    overrides: dict[str, Any] = dict(threads=threads, epochs=1) if smoke else dict(threads=threads)
    cfg = resolve("default", overrides=overrides)
    ours = train_aelab(cfg, bundle, Path(tmp) / f"quality-{time.time_ns()}", budgets_s, every)
    out: dict[str, Any] = {
        "target_ssim": target, "latent": cfg.latent, "time_cap_minutes": max(budgets_min),
        "budgets_minutes": budgets_min, "train_images": len(bundle.train), "test_images": len(bundle.test),
        "threads": threads, "judged_every_epochs": every, "notes": [],
        "aelab": {"recipe": f"preset default ({ours['precision']}): {cfg.model}, loss {cfg.loss}, "
                            f"{cfg.optimizer} lr {cfg.lr:g}, {cfg.schedule}, batch {cfg.batch_size}, "
                            f"up to {cfg.epochs} epochs",
                  **outcome(ours["readings"], target, budgets_min),
                  **{k: ours[k] for k in ("readings", "stopped", "eval_seconds")}},
        "_trained": {k: ours[k] for k in ("model", "run")},
    }
    if keras is None:
        out["notes"].append(keras_skip or "Keras peer not run")
        out["keras"] = None
    else:
        epochs = 1 if smoke else 10
        try:
            k = keras.call("quality", train=temp_npy(tmp, "q-train", bundle.train.images),
                           test=temp_npy(tmp, "q-test", bundle.test.images), budgets_s=budgets_s, epochs=epochs,
                           batch=256, latent=cfg.latent, every=every)
            out["keras"] = {"recipe": f"Keras base recipe: conv, BCE, Adam 1e-3, batch 256, up to {epochs} epochs",
                            **outcome(k["readings"], target, budgets_min), **k}
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
            out["notes"].append(f"Keras did not reach SSIM {target} in {k['wall_s']:.0f} s ({k['epochs']} epochs, "
                                f"{k['stopped']}); the time ratio is an upper bound")
    if not a["seconds_to_target"]:
        out["notes"].append(f"aelab's default recipe did not reach SSIM {target} within the run")
    return out
