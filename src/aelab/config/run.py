"""The run configuration: one dataclass (``RunConfig``), checked values, reading and writing config files.

Every field is an option on the command line (``--field-name``) and a key in a config file (YAML or TOML).
Precedence: defaults < preset < config file < command-line options. An option left at None takes the default of
what it depends on: ``model`` the default for the data (``default_model``, settled once the images' shape is
known: ``settle_model``), ``activation``, ``dropout`` and ``batch_norm`` the model's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from aelab.config.presets import preset
from aelab.config.values import (
    CHANNELS,
    DEFAULT_MODEL,
    KIND_WORDS,
    LARGE_MODEL,
    LOSSES,
    MAX_BLOCKS,
    MAX_LEVELS,
    MAX_MINUTES,
    MAX_WIDTH,
    OPTIMIZERS,
    PRECISIONS,
    RESIZE_MODES,
    SCHEDULES,
    SEED_RANGE,
    SMALL_SIDE,
    Bound,
    check_run_name,
    dataset_spec,
    default_model,
    env_track,
    is_own_dataset,
    opt,
    parse_noise,
    parse_size,
    parse_track,
    scaling_hint,
    shown,
    size_words,
)
from aelab.errors import ConfigError
from aelab.option_files import read_config_file
from aelab.vocabulary import (
    ACTIVATION_NAMES,
    LATENT_RANGE,
    LIKELIHOODS,
    MODEL_NAMES,
    SCALING_MODELS,
    VAE_MODELS,
    own_activation,
)


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
    image_size: list[int] | None = opt(None, "resize every image to N x N or H x W (give N, HxW or H,W; how an image "
                                             "of another aspect fits: --resize; default: keep the images' own size)",
                                       group="data", parse=parse_size)
    resize: str = opt("crop", "how --image-size fits an image of another aspect: crop (scale to cover, cut the "
                              "centre out), pad (scale to fit, pad with black, centred) or stretch (ignore the aspect)",
                      tuple(RESIZE_MODES), "data")
    channels: int | None = opt(None, "1 (grey) or 3 (RGB); default: 3 when any image is in colour, else 1",
                               group="data", valid=CHANNELS, note="1 is grey, 3 is RGB")
    test_fraction: float = opt(0.2, "your own images without a test split (no test/ folder, no x_test): the share "
                                    "held out as the test set (seeded, the same for every run)", group="data",
                              valid=Bound(0.0, 1.0, True, True), note="e.g. 0.2")
    # model
    model: str | None = opt(None, f"architecture (default: {DEFAULT_MODEL}; {LARGE_MODEL} for your own images larger "
                                  f"than {SMALL_SIDE} px on a side)", MODEL_NAMES, "model")
    latent: int = opt(64, "latent size", group="model", valid=Bound(*LATENT_RANGE))
    width: float = opt(1.0, "channel/unit width multiplier", group="model", valid=Bound(0.0, MAX_WIDTH, lo_open=True))
    activation: str | None = opt(None, "activation function (default: the model's own, silu for the resnet models, "
                                       "else relu)", ACTIVATION_NAMES, "model")
    dropout: float | None = opt(None, "dropout rate (default: the model's own, 0.1 for conv-modified)",
                                group="model", valid=Bound(0.0, 1.0, hi_open=True))
    batch_norm: bool | None = opt(None, "batch norm on/off (default: the model's own, on for conv-modified; the "
                                        "resnet models normalise with GroupNorm)", group="model")
    levels: int | None = opt(None, "resnet models: how many times the encoder halves the image (default: until the "
                                   "map is at most 8 px a side)", group="model", valid=Bound(1, MAX_LEVELS))
    blocks: int | None = opt(None, "resnet models: residual blocks per level (default: 1)", group="model",
                             valid=Bound(1, MAX_BLOCKS))
    # training
    loss: str = opt("mse+ssim", "training loss; '+ssim' adds ssim_weight * (1 - SSIM) (VAE models: not used, "
                                "they train on the negative ELBO)", LOSSES, "training")
    ssim_weight: float = opt(0.1, "weight of (1 - SSIM) in the mixed losses", group="training", valid=Bound(0.0))
    # variational autoencoders (model vae, vae-dense, resnet-vae)
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
    track: list[str] | None = opt(None, "log the training to tensorboard, mlflow or both (or none); default: "
                                        "AELAB_TRACK, else none", group="output", parse=parse_track)
    tracking_uri: str | None = opt(None, "--track mlflow: a tracking server or database; default: "
                                         "sqlite:///<runs folder>/mlflow.db, no server", group="output")

    def validate(self) -> RunConfig:
        """Check every value; raise ``ConfigError`` naming the first bad one and its fix."""
        for f in fields(self):  # a float option given as an int becomes a float
            setattr(self, f.name, check_value(f.name, getattr(self, f.name)))
        self.dataset = dataset_spec(self.dataset)
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ConfigError(f"invalid device {shown(self.device)}; use --device cpu, cuda, mps or auto")
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
            plain = ", ".join(m for m in MODEL_NAMES if m not in VAE_MODELS)
            raise ConfigError(f"--noise is for the plain autoencoders ({plain}); drop it for a VAE")
        if self.resize != "crop" and self.image_size is None:
            raise ConfigError(f"--resize {self.resize} says how --image-size fits the images, and no --image-size is "
                              f"given; add --image-size HxW, or drop --resize")
        model = self.model_for()  # the model chosen, or the default when the data's size is known already
        if model is not None:
            self.check_model_options(model)
        return self

    def check_model_options(self, model: str) -> None:
        """``ConfigError`` for an option that ``model`` does not take (--levels/--blocks outside the resnet family,
        batch norm inside it)."""
        scaling = ", ".join(SCALING_MODELS)
        if model not in SCALING_MODELS:
            given = [k for k in ("levels", "blocks") if getattr(self, k) is not None]
            if given:
                raise ConfigError(f"--{given[0]} applies to the resnet models only ({scaling}), not to {model}; drop "
                                  f"it or use --model {scaling_hint(model)}")
        elif self.batch_norm:
            raise ConfigError(f"the resnet models ({scaling}) normalise with GroupNorm, not batch norm; drop "
                              f"--batch-norm")

    @property
    def dataset_name(self) -> str:
        """A short name of the data set for folder names and titles: the built-in's name, or the path's stem."""
        kind, sep, path = self.dataset.partition(":")
        return Path(path).stem or kind if is_own_dataset(self.dataset) else self.dataset

    @property
    def is_vae(self) -> bool:
        return self.model in VAE_MODELS

    def model_for(self, shape: Sequence[int] | None = None) -> str | None:
        """The model this run trains on images of ``shape`` (C, H, W): the one chosen, else the default for the data
        (``default_model``); None when none was chosen and neither ``shape`` nor ``--image-size`` tells the size."""
        if self.model is not None:
            return self.model
        side = shape[1:] if shape is not None else self.image_size
        if side is None and is_own_dataset(self.dataset):
            return None
        return default_model(self.dataset, side)

    @property
    def model_label(self) -> str:
        """The model's name for folder names and titles before the data is read: 'auto' when still open."""
        return self.model_for() or "auto"

    def comparable(self) -> dict[str, Any]:
        """``to_dict`` with the model's own activation written out, so that a run recorded when the activation
        defaulted to relu and the same run asked for now (activation None: the model's own) compare equal."""
        d = self.to_dict()
        if d["activation"] is None and self.model is not None:
            d["activation"] = own_activation(self.model)
        return d

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
        size = None if self.image_size is None else tuple(self.image_size)
        return dict(data_dir=self.data_dir, val_fraction=self.val_fraction, seed=self.seed, classes=self.classes,
                    train_limit=self.train_limit, image_size=size, resize=self.resize, channels=self.channels,
                    test_fraction=self.test_fraction)

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``build_model(self.model, **...)``; None: the model's own default. Call it on a
        configuration whose model is settled (``settle_model``)."""
        kwargs = dict(latent=self.latent, width=self.width, activation=self.activation, dropout=self.dropout,
                      batch_norm=self.batch_norm)
        if self.model in SCALING_MODELS:  # the options of the family that grows with the image
            kwargs.update(levels=self.levels, blocks=self.blocks)
        if self.is_vae:
            kwargs.update(likelihood=self.likelihood, sigma=self.sigma)
        return kwargs


def settle_model(cfg: RunConfig, shape: Sequence[int]) -> tuple[RunConfig, str | None]:
    """(``cfg`` with its model settled for images of ``shape`` (C, H, W), the line that says so when the model is
    the default for the data and not the usual one; None otherwise). ``ConfigError`` when an option given does not
    apply to that model (``--levels`` and the default turned out conv-modified)."""
    if cfg.model is not None:
        return cfg, None
    model = cfg.model_for(shape)
    assert model is not None
    settled = dataclasses.replace(cfg, model=model)
    settled.check_model_options(model)
    if model == DEFAULT_MODEL:
        return settled, None
    return settled, (f"model: {model}, the default for your own images larger than {SMALL_SIDE} px on a side (these "
                     f"are {shape[1]}x{shape[2]}); give --model to choose another")


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
    if f.metadata["parse"] is not None:  # an option with a form of its own (--image-size 64x80) reads itself
        return f.metadata["parse"](value, flag)
    right = {"int": isinstance(value, int), "float": isinstance(value, int | float), "bool": isinstance(value, bool),
             "str": isinstance(value, str),
             "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
    if not right or (kind in ("int", "float") and isinstance(value, bool)):
        raise ConfigError(f"invalid {flag} {shown(value)}; give {KIND_WORDS[kind]}")
    if kind == "float":
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"invalid {flag} {shown(value)}; give a finite number") from None
    choices, valid, note = f.metadata["choices"], f.metadata["valid"], f.metadata["note"]
    note = f" ({note})" if note else ""
    if choices and value not in choices:
        raise ConfigError(f"unknown {flag} {shown(value)}; choose one of: {', '.join(choices)}")
    if isinstance(valid, tuple) and value not in valid:
        raise ConfigError(f"invalid {flag} {shown(value)}; use --{flag} {' or '.join(map(str, valid))}{note}")
    if isinstance(valid, Bound) and not valid.holds(value):
        raise ConfigError(f"invalid {flag} {shown(value)}; use --{flag} {valid.words()}{note}")
    return value


def fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(RunConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Bring a config-file value to the field's type (lists for classes, numbers from strings)."""
    f = fields_by_name()[key]
    kind = str(f.type)
    if value is None:
        if "None" not in kind:  # an empty value ('width:' or 'width: null') where a number or name belongs
            raise ConfigError(f"option {key.replace('_', '-')} has no value; give {KIND_WORDS[kind.split(' ')[0]]} or "
                              f"leave the option out")
        return None
    if f.metadata["parse"] is not None:
        return f.metadata["parse"](value, key.replace("_", "-"))
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
        raise ConfigError(f"option {key.replace('_', '-')}: {shown(value)} is not a valid {kind.split(' ')[0]}; "
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
    cfg.track = env_track() if cfg.track is None else cfg.track  # AELAB_TRACK: below every other source
    return cfg.validate()


def dump_yaml(cfg: RunConfig) -> str:
    """The configuration as a config file ('aelab train --config FILE' takes it); the image size as HxW."""
    d = cfg.to_dict()
    d["image_size"] = None if cfg.image_size is None else size_words(cfg.image_size)
    return "# aelab run configuration (resolved); 'aelab train --config FILE' takes it\n" + yaml.safe_dump(
        d, sort_keys=False)
