"""The run configuration, torch-free (the CLI reads it at start): every option of ``aelab train``.

- ``run``: ``RunConfig`` (one field per option, each with its valid values), checking, config files, precedence
  (defaults < preset < config file < command line), the model settled for the data (``settle_model``);
- ``values``: the options' vocabularies and ranges (``Bound``, ``opt``) and the parsers of options written as
  text (a data set, ``--noise``, ``--image-size``, a run name);
- ``presets``: the named recipes of ``--preset``.

Everything is imported from here: ``from aelab.config import RunConfig, resolve``.
"""

from __future__ import annotations

from aelab.config.presets import PRESET_HELP, PRESETS, preset
from aelab.config.run import RunConfig, check_value, dump_yaml, fields_by_name, merge, resolve, settle_model
from aelab.config.values import (
    CHANNELS,
    DATASET_NAMES,
    DEFAULT_MODEL,
    KIND_WORDS,
    LARGE_MODEL,
    LOSSES,
    MAX_BLOCKS,
    MAX_LEVELS,
    MAX_MINUTES,
    MAX_SIDE,
    MAX_WIDTH,
    NAME_MAX,
    NOISE_KINDS,
    OPTIMIZERS,
    PRECISIONS,
    RESIZE_MODES,
    SCHEDULES,
    SEED_RANGE,
    SMALL_SIDE,
    SOURCE_KINDS,
    Bound,
    Notice,
    check_run_name,
    dataset_spec,
    default_model,
    is_own_dataset,
    opt,
    parse_noise,
    parse_size,
    scaling_hint,
    shown,
    size_warning,
    size_words,
)
from aelab.option_files import read_config_file
from aelab.vocabulary import ACTIVATION_NAMES, LATENT_RANGE, LIKELIHOODS, MODEL_NAMES, SCALING_MODELS, VAE_MODELS

__all__ = [
    "ACTIVATION_NAMES", "CHANNELS", "DATASET_NAMES", "DEFAULT_MODEL", "KIND_WORDS", "LARGE_MODEL", "LATENT_RANGE",
    "LIKELIHOODS", "LOSSES", "MAX_BLOCKS", "MAX_LEVELS", "MAX_MINUTES", "MAX_SIDE", "MAX_WIDTH", "MODEL_NAMES",
    "NAME_MAX", "NOISE_KINDS", "OPTIMIZERS", "PRECISIONS", "PRESETS", "PRESET_HELP", "RESIZE_MODES", "SCALING_MODELS",
    "SCHEDULES", "SEED_RANGE", "SMALL_SIDE", "SOURCE_KINDS", "VAE_MODELS", "Bound", "Notice", "RunConfig",
    "check_run_name", "check_value", "dataset_spec", "default_model", "dump_yaml", "fields_by_name", "is_own_dataset",
    "merge", "opt", "parse_noise", "parse_size", "preset", "read_config_file", "resolve", "scaling_hint",
    "settle_model", "shown", "size_warning", "size_words",
]
