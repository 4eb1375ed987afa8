"""Recipe search for the default preset: quality (test SSIM, PSNR) after every epoch against training time.

Run on demand, e.g.
    .venv/bin/python benchmarks/recipe.py --set ssim_weight=0.1 --log benchmarks/results/recipe.jsonl
Each line of the log is one epoch: the options, epoch, training seconds so far (evaluation excluded),
images/s, test SSIM, PSNR and MSE. Test metrics here only choose a recipe for the docs; they never feed training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from bench_common import cpu_model, load_average

from aelab.config import resolve
from aelab.data import load_dataset, to_float
from aelab.evaluation import reconstruct_all
from aelab.evaluation.metrics import reconstruction_metrics
from aelab.runs import Run
from aelab.training import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[], help="option=value (YAML value)")
    ap.add_argument("--log", default="benchmarks/results/recipe.jsonl")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    overrides.setdefault("report", False)
    cfg = resolve(args.preset, None, overrides)
    bundle = load_dataset(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed, train_limit=cfg.train_limit)
    target = to_float(bundle.test.images)
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        trainer: Trainer

        def on_epoch_end(st) -> None:
            t0 = time.perf_counter()
            m = reconstruction_metrics(reconstruct_all(trainer.model, bundle.test.images), target)
            trainer.model.train()
            row = dict(tag=args.tag, options=overrides, epoch=st.epoch, train_seconds=round(st.elapsed, 1),
                       images_per_s=st.history[-1]["images_per_s"], val_loss=st.history[-1]["val_loss"],
                       ssim=round(float(m["ssim"].mean()), 4), psnr=round(float(m["psnr"].mean()), 2),
                       mse=round(float(m["mse"].mean()), 5), eval_seconds=round(time.perf_counter() - t0, 1),
                       load_average=load_average(), cpu=cpu_model(), date=time.strftime("%Y-%m-%d %H:%M"))
            print(json.dumps(row), flush=True)
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

        run = Run(Path(tmp))
        trainer = Trainer(cfg, run, bundle=bundle, progress=False, on_epoch_end=on_epoch_end)
        trainer.fit()


if __name__ == "__main__":
    main()
