"""What one ``aelab tune`` invocation needs: the study's settings, and each trial's configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aelab.config import MAX_MINUTES, SEED_RANGE, RunConfig, check_value, merge
from aelab.device import cores
from aelab.errors import ConfigError
from aelab.experiments.jobs import MACHINE_KEYS
from aelab.experiments.tune.space import SearchSpace

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("ssim", "loss")
MAX_JOBS = 256     # worker processes on one machine
TIME_STEPS = 10  # a trial with a budget in minutes reports to the pruner after each tenth of it


@dataclass
class TuneSettings:
    """Everything one ``aelab tune`` invocation needs; picklable, so worker processes get a copy."""

    base: RunConfig                  # the full-budget configuration: what the best model is retrained with
    space: SearchSpace
    out: Path
    study: str
    storage: str | None = None       # a database URL; None: <out>/study.journal (storage.py)
    trials: int = 20                 # finished trials the study should hold in all
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = "ssim"
    jobs: int = 1
    sampler_seed: int = 0
    trial_epochs: int | None = None  # None: the base configuration's epochs
    trial_train_limit: int | None = None
    # Minutes of training per trial (the Trainer's --max-minutes: the schedule is fitted to the epochs that fit).
    # A budget in epochs rewards a slow configuration; one in minutes makes it pay for its speed in the search
    # as it will when the best is retrained on a budget in minutes (docs/study/NOTES.md: the study's tuning).
    trial_minutes: float | None = None
    timeout_minutes: float | None = None
    retrain: bool = True
    keep_checkpoints: bool = False
    heartbeat: int = 15              # seconds between a running trial's heartbeats
    start_from_base: bool = True     # trial 0 of a new study: the base configuration's own values
    progress: bool = True

    @property
    def direction(self) -> str:
        return "maximize" if self.objective == "ssim" else "minimize"

    @property
    def objective_label(self) -> str:
        return "validation SSIM" if self.objective == "ssim" else "validation loss"

    @property
    def pruning_steps(self) -> int:
        """The steps a trial reports to the pruner: its epochs, or with ``trial_minutes`` tenths of that budget."""
        return TIME_STEPS if self.trial_minutes is not None else self.trial_config({}).epochs

    def trial_config(self, params: dict[str, Any], number: int | None = None) -> RunConfig:
        """The configuration one trial trains: base, the trial budget, then the sampled options."""
        budget: dict[str, Any] = {"report": False, "name": None if number is None else f"trial-{number:04d}"}
        if self.trial_epochs is not None:
            budget["epochs"] = self.trial_epochs
        if self.trial_train_limit is not None:
            budget["train_limit"] = self.trial_train_limit
        if self.trial_minutes is not None:
            budget["max_minutes"] = self.trial_minutes
        if self.base.threads is None:
            budget["threads"] = max(1, cores() // self.jobs)
        cfg = merge(self.base, budget, "the trial budget")
        return merge(cfg, params, "the search space").validate()

    def budget(self) -> dict[str, Any]:
        """What a trial's score depends on besides its searched options: its configuration less those options, the
        trial's name and the machine's settings (``MACHINE_KEYS``), with the data set by name (a shared study's
        workers may keep the same images at other paths). Only trials of one budget may be ranked together."""
        cfg = self.trial_config({})
        skip = {*self.space.names, *MACHINE_KEYS, "name"}
        return {k: v for k, v in cfg.comparable().items() if k not in skip} | {"dataset": cfg.dataset_name}

    def best_config(self, params: dict[str, Any]) -> RunConfig:
        """The full-budget configuration with a trial's options: what ``best.yaml`` holds."""
        return merge(dataclasses.replace(self.base, name=None), params, "the best trial").validate()

    def validate(self) -> TuneSettings:
        checks = [
            (self.trials >= 1, f"--trials {self.trials}: use at least 1"),
            (1 <= self.jobs <= MAX_JOBS, f"--jobs {self.jobs}: use 1 to {MAX_JOBS} worker processes"),
            (self.sampler in SAMPLERS, f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}"),
            (self.pruner in PRUNERS, f"unknown pruner {self.pruner!r}; choose one of: {', '.join(PRUNERS)}"),
            (self.objective in OBJECTIVES,
             f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}"),
            (self.timeout_minutes is None or 0 < self.timeout_minutes <= MAX_MINUTES,
             f"--timeout: use a number of minutes in (0, {MAX_MINUTES}]"),
            (SEED_RANGE[0] <= self.sampler_seed <= SEED_RANGE[1],
             f"--sampler-seed {self.sampler_seed}: use {SEED_RANGE[0]} to {SEED_RANGE[1]}"),
            (1 <= self.heartbeat <= 3600, "--heartbeat: use 1 to 3600 seconds"),
            (self.base.val_fraction > 0, "tuning scores trials on the validation split; use --val-fraction > 0"),
            (bool(self.study.strip()), "--study: give the study a name"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for key, value, flag in (("epochs", self.trial_epochs, "trial-epochs"),  # the training options' ranges
                                 ("train_limit", self.trial_train_limit, "trial-train-limit"),
                                 ("max_minutes", self.trial_minutes, "trial-minutes")):
            if value is not None:  # None: the base configuration's
                check_value(key, value, flag)
        self.base.validate()
        # Every option the space does not set must make a valid trial on its own.
        self.trial_config({})
        return self
