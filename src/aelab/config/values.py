"""The valid values of the options: their names and ranges (``Bound``, ``opt``), the parsers of the options
written as text (a data set, ``--noise``, ``--image-size``, a run name), and the model a run trains when none is
chosen (``default_model``) with the warning for a model built for smaller images (``size_warning``). Torch-free,
like all of ``aelab.config``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aelab.errors import ConfigError
from aelab.vocabulary import FAMILIES, SCALING_MODELS

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
# --resize: how --image-size fits an image of another aspect (data/resize.py does it, for every image aelab reads)
RESIZE_MODES = {"crop": "scale to cover the size, then cut the centre out (the aspect kept, the edges lost)",
                "pad": "scale to fit inside the size, then pad with black, centred (the whole image kept)",
                "stretch": "resize to exactly the size (the whole image kept, the aspect not)"}
MAX_SIDE = 4096    # --image-size: pixels per side
MAX_WIDTH = 16.0  # x16 channels: conv-modified at ~100x the default's parameters, beyond any use on 28x28 images
MAX_LEVELS = 8     # --levels of the resnet models: 2**8 = 256, enough halvings for 2,048 px sides
MAX_BLOCKS = 8     # --blocks of the resnet models: residual blocks per level
# The seed feeds numpy's generators, torch's and scikit-learn's (the Isolation Forest of 'aelab anomaly'), whose
# RandomState takes 0..2**32-1 only: the narrowest range of every generator aelab seeds with it.
SEED_RANGE = (0, 2**32 - 1)
MAX_MINUTES = 1_000_000  # about two years; far beyond, the budget in seconds overflows
KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a text",
              "list[str]": "a list of names", "list[int]": "a size: N, HxW or H,W"}
NAME_MAX = 255     # bytes in a file name on every common file system
TRACKERS = ("tensorboard", "mlflow")  # --track: where a training is logged besides its run folder (aelab.tracking)
TRACK_VARIABLE = "AELAB_TRACK"  # the trackers of every training that names none

# The model a run trains when none is chosen (--model, a preset or a config file): conv-modified, measured best at
# 28x28; for the user's own images larger than SMALL_SIDE px on a side, the family that grows with the picture.
DEFAULT_MODEL = "conv-modified"
LARGE_MODEL = "resnet"
SMALL_SIDE = 32


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
        valid: Bound | tuple[int, ...] | None = None, note: str = "", parse: Any = None) -> Any:
    """A field: its default, help, choices (names) or ``valid`` (numbers: a range, or the allowed values), its
    group in ``--help``, a ``note`` added to the message of an invalid value, and ``parse(value, flag)``: the
    option's own reader, for an option whose value has a form of its own (``--image-size 64x80``)."""
    return field(default=default, metadata={"help": help, "choices": choices, "group": group, "valid": valid,
                                            "note": note, "parse": parse})


def shown(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (a number of 5,000 digits has no repr at all)."""
    try:
        text = repr(value)
    except ValueError:
        return "(a number too long to show)"
    return text if len(text) <= 40 else text[:37] + "..."


_SIZE = re.compile(r"\s*([0-9]{1,9})\s*(?:[x×,]\s*([0-9]{1,9})\s*)?", re.IGNORECASE)


def parse_size(value: Any, flag: str = "image-size") -> list[int]:
    """An image size, [H, W]: from N (N x N), "N", "HxW", "H,W", or a pair [H, W]; each side 1 to ``MAX_SIDE``.
    Anything else raises ``ConfigError`` naming the option and the forms it takes."""
    pair: tuple[Any, ...] | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        pair = (int(m[1]), int(m[2] or m[1]))
    elif isinstance(value, list | tuple) and len(value) == 2:
        pair = tuple(value)
    if pair is None or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in pair):
        raise ConfigError(f"invalid {flag} {shown(value)}; use --{flag} N, HxW or H,W (whole numbers of pixels "
                          f"between 1 and {MAX_SIDE}, e.g. 64 or 48x80)")
    return [int(pair[0]), int(pair[1])]


def size_words(size: Any) -> str:
    """[64, 80] -> '64x80' (height x width, as ``--image-size`` takes it)."""
    h, w = parse_size(size)
    return f"{h}x{w}"


def scaling_hint(model: str) -> str:
    """The family to name instead of a model that does not grow with the image: the variational one for a VAE."""
    variational = [m for m in SCALING_MODELS if FAMILIES[m]]
    plain = [m for m in SCALING_MODELS if not FAMILIES[m]]
    return (variational if FAMILIES.get(model) else plain)[0]


def check_run_name(name: str | None) -> None:
    """A run name is the run folder's name under the runs folder: a plain folder name, never a path."""
    if name is not None and (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0") or
                             len(name.encode("utf-8", "surrogatepass")) > NAME_MAX):
        raise ConfigError(f"invalid name {shown(name)}: a run name is a plain folder name (no / or \\, not . or "
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


def is_own_dataset(spec: str) -> bool:
    """Whether ``spec`` names the user's own images (``KIND:PATH``), not a built-in data set."""
    kind, sep, _ = str(spec).partition(":")
    return bool(sep) and kind in SOURCE_KINDS


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


class Notice(UserWarning):
    """A statement about a run, not a problem (the model chosen for the data): the CLI shows it as 'note: ...'."""


def default_model(dataset: str, side: Sequence[int] | None) -> str:
    """The model a run of ``dataset`` trains when none was chosen, for images of ``side`` (H, W; None: the data's
    own, 28x28 for the built-in sets): the family that grows with the picture for the user's own images larger
    than ``SMALL_SIDE`` px on a side, else ``DEFAULT_MODEL``."""
    large = side is not None and max(int(v) for v in side) > SMALL_SIDE
    return LARGE_MODEL if large and is_own_dataset(dataset) else DEFAULT_MODEL


def size_warning(model: str, shape: Sequence[int]) -> str | None:
    """One line when ``model`` does not grow with the image and the images of ``shape`` (C, H, W) are larger than
    ``SMALL_SIDE`` px on a side (it is built for ~28x28: larger ones train slowly into a large model); else None."""
    h, w = int(shape[1]), int(shape[2])
    if model in SCALING_MODELS or max(h, w) <= SMALL_SIDE:
        return None
    return (f"--model {model} is built for images of about 28x28 and does not grow with the picture: on {h}x{w} "
            f"images it trains slowly into a large model; use --model {scaling_hint(model)}, which scales with the "
            f"image")


def parse_track(value: Any, flag: str = "track") -> list[str]:
    """The trackers named by ``value``: ``tensorboard``, ``mlflow``, both (a list, or names separated by commas)
    or ``none`` -> a list in ``TRACKERS``' order (``[]``: none). Anything else raises ``ConfigError``."""
    items = value if isinstance(value, list | tuple) else [value]
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    bad = [n for n in names if n not in (*TRACKERS, "none")]
    if bad or not isinstance(value, str | list | tuple):
        raise ConfigError(f"unknown {flag} {shown(bad[0] if bad else value)}; use tensorboard, mlflow, both "
                          f"(tensorboard,mlflow) or none")
    return [t for t in TRACKERS if t in names]


def env_track() -> list[str] | None:
    """The trackers ``AELAB_TRACK`` names, for a training whose options name none; None when it is unset."""
    text = os.environ.get(TRACK_VARIABLE, "").strip()
    return parse_track(text, TRACK_VARIABLE) if text else None

