"""Train a configuration into a fixed folder once: skip it when finished, resume it when interrupted.

Experiments (the tuned model's retraining, the study) are made of many runs; rerunning one must not redo the
runs that are done. ``ensure_run`` is that rule for one folder.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from aelab.config import RunConfig
from aelab.errors import RunError
from aelab.evaluate import evaluate_run
from aelab.jobs import resume_job, train_job, write_report_if_available
from aelab.runs import Run, load_checkpoint

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
                    write_report_if_available(run)
                return run, metrics, "evaluated"
            run, metrics = resume_job(path, {"threads": cfg.threads} if cfg.threads else None, progress=progress)
            assert metrics is not None
            return run, metrics, "resumed"
        shutil.rmtree(path)  # a config without any checkpoint: nothing to keep
    run, metrics = train_job(cfg, path, progress=progress)
    assert metrics is not None
    return run, metrics, "trained"
