"""The jobs the command line starts, each one function: train (then evaluate and report), evaluate."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from aelab.config import RunConfig, dump_yaml
from aelab.data import load_dataset
from aelab.errors import RunError
from aelab.evaluate import evaluate_run
from aelab.runs import Run, atomic_write_text
from aelab.train import Trainer


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    name = cfg.name or f"{cfg.dataset}-{cfg.model}-{cfg.latent}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(root) / name


def train_job(cfg: RunConfig, out: str | Path | None = None, progress: bool = True,
              evaluate: bool = True) -> tuple[Run, dict[str, Any] | None]:
    """Make a new run folder for ``cfg``, train it, evaluate it (and write its report when asked)."""
    cfg.validate()
    path = Path(out) if out else default_run_dir(cfg)
    if (path / "config.yaml").exists():
        raise RunError(f"{path} already holds a run; resume it with 'aelab train --resume {path}' or choose "
                       f"another --out")
    # Load the data before the folder exists, so that a data error leaves nothing behind.
    bundle = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                          classes=cfg.classes, train_limit=cfg.train_limit)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    run = Run(path)
    try:
        trainer = Trainer(cfg, run, bundle=bundle, progress=progress)
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    atomic_write_text(run.config_file, dump_yaml(cfg))
    return _finish(run, trainer, evaluate)


def resume_job(path: str | Path, overrides: dict[str, Any] | None = None, progress: bool = True,
               evaluate: bool = True) -> tuple[Run, dict[str, Any] | None]:
    """Continue an interrupted run exactly where it stopped."""
    run = Run.open(path)
    cfg = run.config()
    for key, value in (overrides or {}).items():
        if key not in ("threads", "device"):
            raise RunError(f"--{key.replace('_', '-')} cannot change when resuming; resume with the run's own "
                           f"config, or start a new run")
        setattr(cfg, key, value)
    if not run.last.is_file():
        raise RunError(f"{run.path} has no last.safetensors to resume from; start a new run")
    trainer = Trainer(cfg, run, resume=True, progress=progress)
    return _finish(run, trainer, evaluate)


def _finish(run: Run, trainer: Trainer, evaluate: bool) -> tuple[Run, dict[str, Any] | None]:
    trainer.fit()
    if not evaluate:
        return run, None
    metrics = evaluate_run(run, bundle=trainer.bundle)
    if trainer.cfg.report:
        write_report_if_available(run)
    return run, metrics


def write_report_if_available(run: Run) -> Path | None:
    """Figures and report.html for ``run``."""
    from aelab.report import write_report

    return write_report(run)
