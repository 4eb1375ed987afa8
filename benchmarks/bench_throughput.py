"""Training throughput against the peers, in rounds: the base ``conv`` model (preset ``seed-64``: latent 64,
batch 256, BCE, Adam) and, in the ``throughput-default`` section, the default model (preset ``default``:
``conv-modified``, latent 64, batch 128, MSE + 0.1 (1 - SSIM), AdamW) against the same model and loss in Keras.

aelab is measured through its public ``Trainer`` with the ``seed-64`` preset (the Keras recipe: BCE, Adam
1e-3, batch 256), so that whatever fast path the Trainer takes is what is timed (``precision auto``: bf16
autocast where the CPU has native bf16). ``aelab-fp32`` is the same Trainer with ``precision fp32`` (a second
long-lived Trainer, one epoch per round), so that the bf16 gain is measured side by side too. Each Trainer
epoch over the same slice of real training images is one round; after it (in ``on_epoch_end``) the peers run
one epoch each over the same images, their order alternating from round to round. Round 0 is a warm-up for every
contender (tracing, oneDNN primitive creation) and is not counted. The Trainer's own per-epoch
``images_per_s`` is used: training-loop time only (its validation pass and checkpoint writes excluded), the
same span the peers' clocks cover.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from bench_common import ceiling_share, model_flops, ratio, summary
from bench_keras import KerasPeer, PeerError, temp_npy
from bench_tutorial import TutorialLoop

from aelab.config import resolve
from aelab.data import DataBundle, Split
from aelab.models import build_model, count_parameters
from aelab.runs import Run
from aelab.training import LoopState, Trainer


def slice_bundle(bundle: DataBundle, n_train: int, n_val: int = 256) -> DataBundle:
    """The first ``n_train`` training images (and a small validation slice) of ``bundle``."""
    def cut(s: Split, n: int) -> Split:
        return Split(s.images[:n], s.labels[:n])
    return replace(bundle, train=cut(bundle.train, n_train), val=cut(bundle.val, n_val))


class FP32Contender:
    """A second, long-lived Trainer with ``precision fp32`` (otherwise the aelab contender's config) that trains
    one epoch per round: warm like the main Trainer, and built before it, so that its construction (which seeds
    torch's global RNG) does not happen in the middle of the other contenders' rounds."""

    def __init__(self, data: DataBundle, threads: int, epochs: int, folder: str, preset: str = "seed-64"):
        cfg = resolve(preset, overrides=dict(epochs=epochs, patience=0, threads=threads, precision="fp32"))
        self.trainer = Trainer(cfg, Run(Path(folder)), bundle=data, progress=False)

    def epoch(self) -> dict[str, float]:
        self.trainer._epoch()  # one epoch of the same loop fit() runs
        row = self.trainer.state.history[-1]
        return {"images_per_s": row["images_per_s"], "loss": row["train_loss"]}


def run_throughput(bundle: DataBundle, *, images: int, rounds: int, warmup: int, threads: int,
                   keras: KerasPeer | None, keras_skip: str | None, gflops: float, tmp: str,
                   bf16_gflops: float | None = None, keras_bf16: KerasPeer | None = None,
                   preset: str = "seed-64") -> dict[str, Any]:
    data = slice_bundle(bundle, images)
    cfg = resolve(preset, overrides=dict(epochs=rounds + warmup, patience=0, threads=threads, max_minutes=None))
    # the tutorial DataLoader loop builds the base model only: it is a peer of the base model's section
    tutorial = (TutorialLoop(data.train.images, data.train.labels, latent=cfg.latent, batch=cfg.batch_size)
                if cfg.model == "conv" else None)
    npy = temp_npy(tmp, "throughput", data.train.images) if keras else None
    rates: dict[str, list[float]] = {"aelab": [], "aelab-fp32": [], "tutorial": [], "keras": [], "keras-bf16": []}
    kerases = {"keras": keras, "keras-bf16": keras_bf16}
    fp32_folder = tempfile.TemporaryDirectory(dir=tmp)
    fp32 = FP32Contender(data, threads, rounds + warmup, fp32_folder.name, preset)
    losses: dict[str, float] = {}
    notes: list[str] = []
    if keras_skip:
        notes.append(keras_skip)

    def peers(round_index: int) -> None:
        order = ["aelab-fp32", "keras-bf16", "tutorial", "keras"]
        order = order if round_index % 2 == 0 else order[::-1]
        for name in order:
            if name == "tutorial":
                if tutorial is None:
                    continue
                out = tutorial.epoch()
            elif name == "aelab-fp32":
                out = fp32.epoch()
            elif kerases[name] is not None and not any(n.startswith(f"{name} failed") for n in notes):
                try:
                    out = kerases[name].call("throughput", x=npy, batch=cfg.batch_size, latent=cfg.latent,
                                              model=cfg.model)
                except PeerError as err:
                    notes.append(f"{name} failed: {err}")
                    continue
            else:
                continue
            losses[name] = out["loss"]
            if round_index >= warmup:
                rates[name].append(out["images_per_s"])

    def on_epoch_end(st: LoopState) -> None:
        row = st.history[-1]
        losses["aelab"] = row["train_loss"]
        if st.epoch > warmup:
            rates["aelab"].append(row["images_per_s"])
        peers(st.epoch - 1)

    with tempfile.TemporaryDirectory(dir=tmp) as folder, fp32_folder:
        trainer = Trainer(cfg, Run(Path(folder)), bundle=data, progress=False, on_epoch_end=on_epoch_end)
        trainer.fit()
    flops = model_flops(build_model(cfg.model, latent=cfg.latent), "train")
    med = {k: summary(v)["median"] for k, v in rates.items()}
    loss_note = "" if cfg.model == "conv" else " and loss (MSE + 0.1 (1 - tf.image.ssim)), AdamW"
    contenders = {
        "aelab": {"what": f"aelab Trainer, preset {preset} (the fast path the Trainer takes: {trainer.precision})",
                  "precision": trainer.precision, "parameters": count_parameters(trainer.model),
                  **summary(rates["aelab"])},
        "aelab-fp32": {"what": f"aelab Trainer, preset {preset}, --precision fp32", "precision": "fp32",
                       **summary(rates["aelab-fp32"])},
        "tutorial": {"what": "plain PyTorch: per-sample Dataset (PIL + ToTensor) and DataLoader, NCHW",
                     "precision": "fp32", **summary(rates["tutorial"])},
        "keras": {"what": f"Keras 3 on TensorFlow, model.fit, same layers{loss_note}", "precision": "fp32",
                  **summary(rates["keras"])},
        "keras-bf16": {"what": f"Keras 3 on TensorFlow, model.fit, same layers{loss_note}, mixed_bfloat16 policy",
                       "precision": "bf16", **summary(rates["keras-bf16"])},
    }
    # Like with like: each aelab precision against Keras at the same precision. The headline is the ratio at
    # aelab's default precision (the one the Trainer chose: bf16 where the CPU has it natively).
    by_precision = {"fp32": ratio(med["aelab-fp32"], med["keras"]),
                    "bf16": ratio(med["aelab"], med["keras-bf16"]) if trainer.precision == "bf16" else None}
    for name, c in contenders.items():
        c["final_loss"] = round(losses[name], 4) if name in losses else None
        c["fp32_ceiling_share"] = ceiling_share(c["median"], flops, gflops)
        c["bf16_ceiling_share"] = (ceiling_share(c["median"], flops, bf16_gflops)
                                   if c["precision"] == "bf16" and bf16_gflops else None)
    return {
        "preset": preset, "model": cfg.model, "latent": cfg.latent, "batch": cfg.batch_size,
        "images_per_round": len(data.train),
        "rounds": rounds, "warmup_rounds": warmup, "threads": threads, "torch_threads": torch.get_num_threads(),
        "train_flops_per_image": round(flops), "contenders": contenders,
        "ratio_vs_keras": by_precision[trainer.precision],
        "ratio_vs_keras_by_precision": by_precision,
        "ratio_bf16_vs_keras_fp32_mixed": ratio(med["aelab"], med["keras"]) if trainer.precision == "bf16" else None,
        "ratio_vs_tutorial": ratio(med["aelab"], med["tutorial"]),
        "ratio_bf16_vs_fp32": ratio(med["aelab"], med["aelab-fp32"]),
        "ratio_fp32_vs_keras": ratio(med["aelab-fp32"], med["keras"]),
        "paired_ratios_vs_keras": [ratio(a, b) for a, b in zip(
            rates["aelab"], rates["keras-bf16" if trainer.precision == "bf16" else "keras"], strict=False)],
        "paired_ratios_fp32_vs_keras": [ratio(a, b) for a, b in zip(rates["aelab-fp32"], rates["keras"],
                                                                    strict=False)],
        "paired_ratios_vs_tutorial": [ratio(a, b) for a, b in zip(rates["aelab"], rates["tutorial"],
                                                                  strict=False)],
        "notes": notes,
    }
