"""The jobs behind ``aelab train``: a new run (train, evaluate, report), a resumed one, and ``ensure_run``.

Experiments (the tuned model's retraining, the study) are made of many runs; rerunning one must not redo the
runs that are done. ``ensure_run`` is that rule for one folder: skip it when finished, resume it when
interrupted, train it when new.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from aelab.config import RunConfig, dump_yaml
from aelab.data import load_dataset
from aelab.errors import RunError
from aelab.evaluation import evaluate_run, evaluate_run_passes
from aelab.files import atomic_write_text
from aelab.report import write_report
from aelab.runs import Run, load_checkpoint
from aelab.training import Trainer


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
    bundle = load_dataset(cfg.dataset, **cfg.data_kwargs())
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
    # The report reuses the data in memory and the evaluation's test passes: nothing is loaded or encoded twice.
    metrics, passes = evaluate_run_passes(run, bundle=trainer.bundle)
    if trainer.cfg.report:
        write_report(run, bundle=trainer.bundle, passes=passes)
    return run, metrics


# Keys that may differ between a finished run and the same run asked for again (machine, not experiment).
MACHINE_KEYS = ("threads", "device", "data_dir", "report")


def config_difference(a: RunConfig, b: RunConfig) -> str | None:
    """The first option (other than machine settings) in which ``a`` and ``b`` differ, or None."""
    da, db = a.to_dict(), b.to_dict()
    for key in da:
        if key not in MACHINE_KEYS and da[key] != db[key]:
            return f"{key} {da[key]!r} there, {db[key]!r} asked for"
    return None


def ensure_run(cfg: RunConfig, path: str | Path, progress: bool = True
               ) -> tuple[Run, dict[str, Any], str]:
    """(run, metrics, what was done: trained / resumed / evaluated / skipped) for ``cfg`` in ``path``."""
    path = Path(path)
    cfg = dataclasses.replace(cfg, name=path.name)
    if (path / "config.yaml").is_file():
        run = Run.open(path)
        diff = config_difference(run.config(), cfg)
        if diff:
            raise RunError(f"{path} holds a run of another configuration ({diff}); delete that folder or write "
                           f"the experiment somewhere else")
        if run.metrics.is_file():
            return run, run.load_metrics(), "skipped"
        if run.last.is_file():
            _, meta = load_checkpoint(run.last)
            if meta.get("loop", {}).get("stopped"):
                metrics = evaluate_run(run)
                if cfg.report:
                    write_report(run)
                return run, metrics, "evaluated"
            run, metrics = resume_job(path, {"threads": cfg.threads} if cfg.threads else None, progress=progress)
            assert metrics is not None
            return run, metrics, "resumed"
        shutil.rmtree(path)  # a config without any checkpoint: nothing to keep
    run, metrics = train_job(cfg, path, progress=progress)
    assert metrics is not None
    return run, metrics, "trained"
