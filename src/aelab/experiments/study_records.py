"""What a study remembers of each finished step, in its own ``study.json``: the configuration, the table row and
the machine it ran on.

A study's run folders (``--runs``: checkpoints, figures, the tuning journals) are far too large to commit, and a
fresh checkout has none of them. Without a memory of its own, a study rerun there would train every step again,
hours of work, to rebuild tables it already has. So each finished step leaves a record in ``study.json``, which
is committed with the tables: a later invocation that finds no run folder for a step, but a record whose
configuration is the one the plan asks for, reads the step's row back from the record (``recorded``) and trains
nothing. A changed recipe changes the plan's configuration, so exactly the steps it touches train again; a
changed tuning budget (which no run configuration shows) drops the tuning steps' records (``study._previous_steps``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aelab.config import RunConfig, merge
from aelab.errors import ConfigError
from aelab.experiments.jobs import config_difference

RECORDED = "recorded"  # what a step read back from its record did: nothing


def step_config(cfg: RunConfig, name: str) -> RunConfig:
    """The configuration a step's record keeps: the plan's, named after the step's folder (as ``ensure_run``)."""
    return dataclasses.replace(cfg, name=name)


def make_record(cfg: RunConfig, name: str, row: dict[str, Any], machine: dict[str, Any] | None,
                tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a finished step: its configuration, its table row, the machine that ran it and, for a tuning
    step, the best trial and the trial counts."""
    record: dict[str, Any] = {"config": step_config(cfg, name).to_dict(), "row": dict(row), "machine": machine}
    if tuning is not None:
        record["tuning"] = {"best": tuning["best"], "trials": tuning["trials"]}
    return record


ROW_KEYS = ("name", "latent", "ssim", "psnr", "mse", "pca_ssim", "pca_mse")  # what the tables and goals read


def matching(record: dict[str, Any] | None, cfg: RunConfig, name: str, tuned: bool = False) -> dict[str, Any] | None:
    """``record`` when it holds a finished step of configuration ``cfg`` (machine settings aside), else None; a
    damaged record (no row, a row without its metrics, a tuning step without its best trial) is no record.

    A record written by another aelab version reads with that version's options; an option added since takes its
    default, so the record matches only when the plan asks for that default too."""
    if not isinstance(record, dict) or not isinstance(record.get("row"), dict):
        return None
    if any(record["row"].get(k) is None for k in ROW_KEYS):
        return None
    if tuned and not (isinstance(record.get("tuning"), dict) and isinstance(record["tuning"].get("best"), dict)
                      and "trial" in record["tuning"]["best"] and "trials" in record["tuning"]):
        return None
    try:
        recorded = merge(RunConfig(), record["config"], "the study's record")
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return record if config_difference(recorded, step_config(cfg, name)) is None else None
