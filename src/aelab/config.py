"""The run configuration: one dataclass, its presets, and reading/writing config files.

Every field is an option on the command line (``--field-name``) and a key in a config file (YAML or TOML).
Precedence: defaults < preset < config file < command-line options.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from aelab.errors import ConfigError
from aelab.option_files import read_config_file
from aelab.vocabulary import ACTIVATION_NAMES, LATENT_RANGE, LIKELIHOODS, MODEL_NAMES, VAE_MODELS

LOSSES = ("bce", "mse", "mse+ssim", "bce+ssim")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
DATASET_NAMES = ("fashion-mnist", "mnist")
# The user's own images (data/own.py): --dataset KIND:PATH.
SOURCE_KINDS = {"folder": "an image folder, one sub-folder per class", "npz": "a .npz of arrays x, y, ...",
                "npy": "a .npy array of images", "idx": "IDX files (a folder or a file-name prefix)"}
CHANNELS = (1, 3)
PRECISIONS = ("auto", "fp32", "bf16")
NOISE_KINDS = {"gaussian": "SIGMA", "salt-pepper": "P", "mask": "FRACTION"}  # --noise KIND:LEVEL (data/noise.py)
MAX_WIDTH = 16.0  # x16 channels: conv-modified at ~100x the default's parameters, beyond any use on 28x28 images
# The seed feeds numpy's generators, torch's and scikit-learn's (the Isolation Forest of 'aelab anomaly'), whose
# RandomState takes 0..2**32-1 only: the narrowest range of every generator aelab seeds with it.
SEED_RANGE = (0, 2**32 - 1)
MAX_MINUTES = 1_000_000  # about two years; far beyond, the budget in seconds overflows
KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a text",
              "list[str]": "a list of names"}
NAME_MAX = 255     # bytes in a file name on every common file system


@dataclass(frozen=True)
class Bound:
    """The valid values of a number option: from ``lo`` to ``hi`` (None: no bound), each end open or closed;
    always finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        lo, hi = self.lo, self.hi
        return (isinstance(v, int) or math.isfinite(v)) and (lo is None or (v > lo if self.lo_open else v >= lo)) and (
            hi is None or (v < hi if self.hi_open else v <= hi))

    def words(self) -> str:
        """The range in words: 'between 1 and 1024', 'in (0, 16]', '>= 0', '> 0'."""
        def num(v: float) -> str:
            return f"{v:g}" if isinstance(v, float) else str(v)
        if self.lo is not None and self.hi is not None:
            if not (self.lo_open or self.hi_open) and isinstance(self.lo, int) and isinstance(self.hi, int):
                return f"between {self.lo} and {self.hi}"
            return f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {num(self.hi)}" if self.hi is not None else "finite"


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, group: str = "",
        valid: Bound | tuple[int, ...] | None = None, note: str = "") -> Any:
    """A field: its default, help, choices (names) or ``valid`` (numbers: a range, or the allowed values), its
    group in ``--help``, and a ``note`` added to the message of an invalid value."""
    return field(default=default, metadata={"help": help, "choices": choices, "group": group, "valid": valid,
                                            "note": note})


@dataclass
class RunConfig:
    # data
    dataset: str = opt("fashion-mnist", "data set: fashion-mnist, mnist, or your own images as folder:PATH, "
                                        "npz:PATH, npy:PATH or idx:PREFIX (README, 'Your own images')", group="data")
    data_dir: str | None = opt(None, "folder holding the IDX .gz files (default: AELAB_DATA_DIR, the cache, "
                                     "the Debian package, then download)", group="data")
    classes: list[str] | None = opt(None, "train on these classes only, by name or index, comma separated "
                                          "(e.g. 'T-shirt/top,Trouser' or '0,1')", group="data")
    val_fraction: float = opt(0.1, "share of the training set held out for validation / early stopping",
                              group="data", valid=Bound(0.0, 1.0, hi_open=True))
    train_limit: int | None = opt(None, "use only this many training images (seeded sample; quick runs)",
                                  group="data", valid=Bound(1, 10**9))
    image_size: int | None = opt(None, "resize every image to SIZE x SIZE (the shorter side to SIZE, then the "
                                       "centre cropped; default: keep the images' own size)", group="data",
                                 valid=Bound(1, 4096), note="pixels per side")
    channels: int | None = opt(None, "1 (grey) or 3 (RGB); default: 3 when any image is in colour, else 1",
                               group="data", valid=CHANNELS, note="1 is grey, 3 is RGB")
    test_fraction: float = opt(0.2, "your own images without a test split (no test/ folder, no x_test): the share "
                                    "held out as the test set (seeded, the same for every run)", group="data",
                              valid=Bound(0.0, 1.0, True, True), note="e.g. 0.2")
    # model
    model: str = opt("conv-modified", "architecture", MODEL_NAMES, "model")
    latent: int = opt(64, "latent size", group="model", valid=Bound(*LATENT_RANGE))
    width: float = opt(1.0, "channel/unit width multiplier", group="model", valid=Bound(0.0, MAX_WIDTH, lo_open=True))
    activation: str = opt("relu", "activation function", ACTIVATION_NAMES, "model")
    dropout: float | None = opt(None, "dropout rate (default: the model's own, 0.1 for conv-modified)",
                                group="model", valid=Bound(0.0, 1.0, hi_open=True))
    batch_norm: bool | None = opt(None, "batch norm on/off (default: the model's own, on for conv-modified)",
                                  group="model")
    # training
    loss: str = opt("mse+ssim", "training loss; '+ssim' adds ssim_weight * (1 - SSIM) (VAE models: not used, "
                                "they train on the negative ELBO)", LOSSES, "training")
    ssim_weight: float = opt(0.1, "weight of (1 - SSIM) in the mixed losses", group="training", valid=Bound(0.0))
    # variational autoencoders (model vae, vae-dense)
    likelihood: str = opt("bernoulli", "VAE: p(x|z), bernoulli (BCE) or gaussian (MSE with a standard deviation)",
                          LIKELIHOODS, "vae")
    sigma: float | None = opt(None, "VAE, gaussian likelihood: fixed standard deviation of the pixels (default: "
                                    "learned, one value for all pixels)", group="vae",
                               valid=Bound(0.0, lo_open=True), note="e.g. 0.1, or leave it out to learn it")
    beta: float = opt(1.0, "VAE: weight of the KL term (1: the ELBO; beta-VAE otherwise)", group="vae",
                      valid=Bound(0.0), note="e.g. 1")
    kl_warmup: float = opt(0.0, "VAE: epochs over which the KL weight rises linearly from 0 to beta (0: none)",
                           group="vae", valid=Bound(0.0), note="epochs")
    free_bits: float = opt(0.0, "VAE: nats per latent dimension (batch mean) below which the KL is not "
                                "penalised (free bits, Kingma et al. 2016; 0: none)", group="vae",
                           valid=Bound(0.0), note="nats per latent dimension")
    optimizer: str = opt("adamw", "optimizer", OPTIMIZERS, "training")
    lr: float = opt(3e-3, "(peak) learning rate", group="training", valid=Bound(0.0, lo_open=True), note="e.g. 1e-3")
    weight_decay: float = opt(1e-4, "weight decay", group="training", valid=Bound(0.0))
    schedule: str = opt("onecycle", "learning-rate schedule over the planned epochs", SCHEDULES, "training")
    batch_size: int = opt(128, "images per step (with several processes: in all, split among them)",
                          group="training", valid=Bound(1, 10**7), note="e.g. 128")
    epochs: int = opt(12, "maximum number of epochs", group="training", valid=Bound(1, 10**6))
    patience: int = opt(5, "early stopping: epochs without validation improvement (0 turns it off)",
                        group="training", valid=Bound(0, 10**6), note="0 turns early stopping off")
    min_delta: float = opt(0.0, "early stopping: smallest validation-loss decrease that counts", group="training",
                           valid=Bound(0.0))
    max_minutes: float | None = opt(None, "stop after the epoch that would overrun this many minutes",
                                    group="training", valid=Bound(0.0, MAX_MINUTES, lo_open=True))
    noise: str | None = opt(None, "denoising: corrupt the training inputs (the target stays clean) with "
                                  "gaussian:SIGMA, salt-pepper:P or mask:FRACTION (docs/denoising.md)",
                            group="training")
    seed: int = opt(0, "random seed (split, initialisation, shuffling, dropout)", group="training",
                    valid=Bound(*SEED_RANGE))
    threads: int | None = opt(None, "CPU threads for torch (default: all cores)", group="training",
                              valid=Bound(1, 4096))
    device: str = opt("auto", "cpu, cuda, mps or auto (on CUDA: data on the GPU)", group="training")
    precision: str = opt("auto", "training arithmetic: bf16 autocast (weights and loss stay fp32) or fp32; auto "
                                 "takes bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32",
                         PRECISIONS, "training")
    compile: bool = opt(False, "torch.compile the model (helps on CUDA; measured slower on small CPUs)",
                        group="training")
    sync_batch_norm: bool = opt(False, "several processes (--nproc, torchrun): batch norm over the whole global "
                                       "batch (SyncBatchNorm, CUDA only); off: each process normalises its share",
                                group="training")
    # output
    name: str | None = opt(None, "run name: the run folder's name under runs/ (default: "
                                 "dataset-model-latent-time)", group="output")
    report: bool = opt(True, "write figures and report.html when training ends", group="output")

    def validate(self) -> RunConfig:
        """Check every value; raise ``ConfigError`` naming the first bad one and its fix."""
        for f in fields(self):  # a float option given as an int becomes a float
            setattr(self, f.name, check_value(f.name, getattr(self, f.name)))
        self.dataset = dataset_spec(self.dataset)
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ConfigError(f"invalid device {_shown(self.device)}; use --device cpu, cuda, mps or auto")
        check_run_name(self.name)
        if self.val_fraction == 0 and self.patience > 0:
            raise ConfigError("early stopping needs a validation split; set --val-fraction > 0 or --patience 0")
        if self.sigma is not None and self.likelihood != "gaussian":
            raise ConfigError("--sigma applies to the gaussian likelihood only; drop it or add --likelihood gaussian")
        if self.model not in VAE_MODELS:
            given = [k for k, default in (("likelihood", "bernoulli"), ("sigma", None), ("beta", 1.0),
                                          ("kl_warmup", 0.0), ("free_bits", 0.0)) if getattr(self, k) != default]
            if given:
                raise ConfigError(f"--{given[0].replace('_', '-')} applies to the VAE models only ("
                                  f"{', '.join(VAE_MODELS)}); drop it or use --model vae")
        parse_noise(self.noise)
        if self.noise and self.is_vae:
            raise ConfigError("--noise is for the plain autoencoders (dense, conv, conv-modified); drop it for a VAE")
        return self

    @property
    def dataset_name(self) -> str:
        """A short name of the data set for folder names and titles: the built-in's name, or the path's stem."""
        kind, sep, path = self.dataset.partition(":")
        return Path(path).stem or kind if sep and kind in SOURCE_KINDS else self.dataset

    @property
    def is_vae(self) -> bool:
        return self.model in VAE_MODELS

    def objective(self) -> str:
        """What the run trains on, in words (the report's and metrics.json's 'loss')."""
        if not self.is_vae:
            return self.loss
        likelihood = self.likelihood
        if likelihood == "gaussian":
            likelihood += " (sigma learned)" if self.sigma is None else f" (sigma {self.sigma:g})"
        parts = [f"negative ELBO, {likelihood}", f"beta {self.beta:g}"]
        if self.kl_warmup:
            parts.append(f"KL warm-up {self.kl_warmup:g} epochs")
        if self.free_bits:
            parts.append(f"free bits {self.free_bits:g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def data_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``aelab.data.load_dataset(self.dataset, **...)`` that give this run's splits."""
        return dict(data_dir=self.data_dir, val_fraction=self.val_fraction, seed=self.seed, classes=self.classes,
                    train_limit=self.train_limit, image_size=self.image_size, channels=self.channels,
                    test_fraction=self.test_fraction)

    def model_kwargs(self) -> dict[str, Any]:
        kwargs = dict(latent=self.latent, width=self.width, activation=self.activation, dropout=self.dropout,
                      batch_norm=self.batch_norm)
        if self.is_vae:
            kwargs.update(likelihood=self.likelihood, sigma=self.sigma)
        return kwargs


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (a number of 5,000 digits has no repr at all)."""
    try:
        text = repr(value)
    except ValueError:
        return "(a number too long to show)"
    return text if len(text) <= 40 else text[:37] + "..."


def check_value(key: str, value: Any, flag: str | None = None) -> Any:
    """``value`` for the option ``key``, checked: its type, then its choices or its valid range (each number
    option states one); anything else raises ``ConfigError`` naming the option (as ``--flag`` when another
    option sets this one) and what it takes."""
    f = fields_by_name()[key]
    flag, kind = flag or key.replace("_", "-"), str(f.type).split(" | ")[0]
    if value is None:
        if "None" in str(f.type):
            return None
        raise ConfigError(f"option {flag} has no value; give {KIND_WORDS[kind]} or leave the option out")
    right = {"int": isinstance(value, int), "float": isinstance(value, int | float), "bool": isinstance(value, bool),
             "str": isinstance(value, str),
             "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
    if not right or (kind in ("int", "float") and isinstance(value, bool)):
        raise ConfigError(f"invalid {flag} {_shown(value)}; give {KIND_WORDS[kind]}")
    if kind == "float":
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"invalid {flag} {_shown(value)}; give a finite number") from None
    choices, valid, note = f.metadata["choices"], f.metadata["valid"], f.metadata["note"]
    note = f" ({note})" if note else ""
    if choices and value not in choices:
        raise ConfigError(f"unknown {flag} {_shown(value)}; choose one of: {', '.join(choices)}")
    if isinstance(valid, tuple) and value not in valid:
        raise ConfigError(f"invalid {flag} {_shown(value)}; use --{flag} {' or '.join(map(str, valid))}{note}")
    if isinstance(valid, Bound) and not valid.holds(value):
        raise ConfigError(f"invalid {flag} {_shown(value)}; use --{flag} {valid.words()}{note}")
    return value


def check_run_name(name: str | None) -> None:
    """A run name is the run folder's name under the runs folder: a plain folder name, never a path."""
    if name is not None and (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0") or
                             len(name.encode("utf-8", "surrogatepass")) > NAME_MAX):
        raise ConfigError(f"invalid name {_shown(name)}: a run name is a plain folder name (no / or \\, not . or "
                          f"..; at most {NAME_MAX} bytes); give --out DIR to put the run folder somewhere else")


def dataset_spec(text: str) -> str:
    """A built-in name as it is, or ``KIND:PATH`` with PATH made absolute (a run folder is read from anywhere);
    anything else raises ``ConfigError``. What each kind reads is ``aelab.data.own``."""
    text = str(text).strip()
    if text in DATASET_NAMES:
        return text
    kind, sep, path = text.partition(":")
    if sep and kind in SOURCE_KINDS and path.strip():
        return f"{kind}:{os.path.abspath(os.path.expanduser(path.strip()))}"
    if sep and kind in SOURCE_KINDS:
        raise ConfigError(f"dataset {text!r} names no path; give --dataset {kind}:PATH")
    forms = ", ".join(f"{k}:PATH" for k in SOURCE_KINDS)
    raise ConfigError(f"unknown dataset {text!r}; choose one of: {', '.join(DATASET_NAMES)}, or your own images as "
                      f"{forms}")


def parse_noise(text: str | None) -> tuple[str, float] | None:
    """``KIND:LEVEL`` (``gaussian:0.3``, ``salt-pepper:0.1``, ``mask:0.25``) -> (kind, level); None or '' -> None;
    anything else raises ``ConfigError``. The corruptions themselves are in ``aelab.data.noise``."""
    if text is None or not str(text).strip():
        return None
    kind, _, level = str(text).strip().lower().partition(":")
    forms = ", ".join(f"{k}:{v}" for k, v in NOISE_KINDS.items())
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise {text!r}; use one of {forms} (e.g. gaussian:0.3)")
    try:
        value = float(level)
    except ValueError:
        raise ConfigError(f"noise {text!r} needs a number after the colon, e.g. {kind}:0.3") from None
    upper = math.inf if kind == "gaussian" else 1.0
    if not (math.isfinite(value) and 0.0 < value <= upper):
        rng = "> 0" if kind == "gaussian" else "in (0, 1]"
        raise ConfigError(f"invalid noise level {level!r} for {kind}; give {NOISE_KINDS[kind]} {rng}")
    return kind, value


def fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(RunConfig)}


PRESETS: dict[str, dict[str, Any]] = {
    # The 10-minute recipe (docs/study/NOTES.md, session 9): batch 64 and lr 5e-3 / dropout 0.05 learn more per
    # epoch at the same cost per image (4 epochs, latent 64: test SSIM 0.8733 -> 0.8801, PSNR 23.71 -> 24.00 dB);
    # the epoch cap of 30 lets the schedule fit as many epochs as 10 minutes hold (18 in bf16 on an AMX Xeon).
    "default": dict(max_minutes=10.0, batch_size=64, lr=5e-3, dropout=0.05, epochs=30),
    "seed-2d": dict(model="conv", latent=2, loss="bce", optimizer="rmsprop", lr=1e-3, weight_decay=0.0,
                    schedule="constant", batch_size=256, epochs=20, dataset="fashion-mnist"),
    "seed-64": dict(model="conv", latent=64, loss="bce", optimizer="adam", lr=1e-3, weight_decay=0.0,
                    schedule="constant", batch_size=256, epochs=10),
    "seed-128": dict(model="conv-modified", latent=128),
    "seed-256": dict(model="conv-modified", latent=256),
    "mnist-dense-2d": dict(dataset="mnist", model="dense", latent=2, loss="mse", optimizer="adam", lr=1e-3,
                           weight_decay=0.0, schedule="cosine", batch_size=256, epochs=60),
    # VAEs (docs/vae.md): the default recipe's optimizer and schedule, a Gaussian likelihood with a learned sigma
    "seed-vae-2d": dict(model="vae", latent=2, likelihood="gaussian", kl_warmup=2.0, epochs=12,
                        dataset="fashion-mnist"),
    "mnist-vae-2d": dict(model="vae", latent=2, likelihood="gaussian", kl_warmup=2.0, epochs=12, dataset="mnist"),
}
PRESET_HELP = {
    "default": "the measured default recipe (conv-modified, latent 64, MSE+0.1(1-SSIM), AdamW lr 5e-3, dropout "
               "0.05, batch 64, one-cycle over as many epochs as fit in 10 minutes, at most 30)",
    "seed-2d": "conv, latent 2, BCE, RMSprop, Fashion-MNIST (for latent-space plots)",
    "seed-64": "the base conv model at latent 64 as published examples train it (BCE, Adam, batch 256)",
    "seed-128": "dimension reduction: conv-modified at latent 128",
    "seed-256": "dimension reduction: conv-modified at latent 256",
    "mnist-dense-2d": "dense, MNIST, latent 2, MSE, 60 epochs (~4 minutes on 2 cores)",
    "seed-vae-2d": "VAE (conv-modified backbone), latent 2, Gaussian likelihood (learned sigma), 2-epoch KL "
                   "warm-up, Fashion-MNIST: the 2-D prior manifold to look at",
    "mnist-vae-2d": "the same VAE on MNIST",
}


def _coerce(key: str, value: Any) -> Any:
    """Bring a config-file value to the field's type (lists for classes, numbers from strings)."""
    f = fields_by_name()[key]
    kind = str(f.type)
    if value is None:
        if "None" not in kind:  # an empty value ('width:' or 'width: null') where a number or name belongs
            raise ConfigError(f"option {key.replace('_', '-')} has no value; give {KIND_WORDS[kind.split(' ')[0]]} or "
                              f"leave the option out")
        return None
    try:
        if key == "classes":
            if isinstance(value, str):
                return [c.strip() for c in value.split(",") if c.strip()]
            return [str(c) for c in value]
        if isinstance(value, dict | list | tuple | set):
            raise TypeError(value)  # a mapping or a list where one value belongs
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "on", "1"):
                    return True
                if value.lower() in ("false", "no", "off", "0"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if isinstance(value, bool):
            raise TypeError(value)  # YAML's true/false is no number: 'latent: true' must not read as 1
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"option {key.replace('_', '-')}: {_shown(value)} is not a valid {kind.split(' ')[0]}; "
                          f"fix the value") from None


def merge(base: RunConfig, overrides: dict[str, Any], source: str) -> RunConfig:
    """A copy of ``base`` with ``overrides`` applied; unknown keys raise ``ConfigError`` naming ``source``."""
    known = fields_by_name()
    values = base.to_dict()
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"option name {key!r} in {source} is not a name; use the option names of 'aelab train "
                              f"--help', e.g. latent: 32")
        k = key.replace("-", "_")
        if k not in known:
            raise ConfigError(f"unknown option {key!r} in {source}; see 'aelab train --help' for the options")
        values[k] = _coerce(k, value)
    return RunConfig(**values)


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def resolve(preset_name: str | None = None, config_file: str | Path | None = None,
            overrides: dict[str, Any] | None = None) -> RunConfig:
    """defaults < preset < config file < overrides, validated."""
    cfg = RunConfig()
    if preset_name:
        cfg = merge(cfg, preset(preset_name), f"preset {preset_name}")
    if config_file:
        cfg = merge(cfg, read_config_file(config_file), str(config_file))
    if overrides:
        cfg = merge(cfg, overrides, "the command line")
    return cfg.validate()


def dump_yaml(cfg: RunConfig) -> str:
    return "# aelab run configuration (resolved); 'aelab train --config FILE' takes it\n" + yaml.safe_dump(
        cfg.to_dict(), sort_keys=False)
