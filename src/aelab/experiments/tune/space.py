"""The search space of ``aelab tune``: a YAML or TOML file of training options, turned into Optuna suggestions.

Each key is a training option (a ``RunConfig`` field). A list means "choose one of these"; a mapping
``{low, high, log, step}`` means a number in a range (an integer for integer options). Every value is checked
against the base configuration when the file is read, so a bad file fails at once with one line naming the key,
not in the middle of a study.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from aelab.config import RunConfig, fields_by_name, merge
from aelab.errors import AelabError, ConfigError
from aelab.models import MODELS
from aelab.option_files import load_yaml, read_options_file

DEFAULT_SPACE = "search_space.yaml"
# The packaged spaces by name: the default one, and the focused one the study's tuning steps search.
PACKAGED_SPACES = {"default": DEFAULT_SPACE, "study": "study_space.yaml"}
# Options that change the data, the hardware or the output: a study compares models on one data set.
NOT_SEARCHABLE = ("dataset", "data_dir", "classes", "val_fraction", "train_limit", "seed", "threads", "device",
                  "name", "report")
RANGE_KEYS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Choice:
    """One value out of a list (Optuna's categorical distribution)."""

    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """A number in [low, high], on a log scale or a grid when asked."""

    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


Param = Choice | Range


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """One set of options drawn by ``trial``'s sampler."""
        out: dict[str, Any] = {}
        for p in self.params:
            if isinstance(p, Choice):
                out[p.name] = trial.suggest_categorical(p.name, list(p.values))
            elif p.integer:
                out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                out[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        return out

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Optuna's distribution of each option (what a trial records)."""
        dist = optuna.distributions
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for p in self.params:
            if isinstance(p, Choice):
                out[p.name] = dist.CategoricalDistribution(list(p.values))
            elif p.integer:
                out[p.name] = dist.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                out[p.name] = dist.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        return out

    def describe(self) -> str:
        """One line naming each option and its values (for a page that says what a search searched)."""
        return "; ".join(f"{name} {_describe(d)}" for name, d in self.distributions().items())

    def check_compatible(self, recorded: dict[str, optuna.distributions.BaseDistribution], study: str) -> None:
        """Optuna cannot change an option's kind (list/range, log) or choices within a study: say so up front."""
        for name, new in self.distributions().items():
            old = recorded.get(name)
            if old is None:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(old, new)
            except ValueError as err:
                reason = str(err).rstrip(".")
                raise _err(self.source, name, f"differs from what study {study!r} recorded ({reason}: "
                                              f"{_describe(old)}); keep it as it was, or use another --study "
                                              f"name") from None

    def base_point(self, cfg: RunConfig) -> dict[str, Any]:
        """``cfg``'s own values of the searched options that lie in the space (the recipe as a trial).

        Options left at None ("the model's own", e.g. dropout) are read from the model's defaults.
        """
        model_defaults = {k: v.default for k, v in inspect.signature(MODELS[cfg.model]).parameters.items()
                          if v.default is not inspect.Parameter.empty}
        point: dict[str, Any] = {}
        for p in self.params:
            value = getattr(cfg, p.name)
            if value is None:
                value = model_defaults.get(p.name)
            if value is None:
                continue
            if isinstance(p, Choice) and value in p.values:
                point[p.name] = value
            elif isinstance(p, Range) and not isinstance(value, bool) and p.low <= value <= p.high:
                point[p.name] = int(value) if p.integer else float(value)
        return point

    def with_choice(self, name: str, values: list[Any], base: RunConfig) -> SearchSpace:
        """This space with ``name`` searched over ``values`` (replacing what the file said about it)."""
        extra = parse_space({name: values}, self.source, base).params
        kept = tuple(p for p in self.params if p.name != name)
        return replace(self, params=kept + extra)

    def to_dict(self) -> dict[str, Any]:
        """The space as it would be written in a file (for the study folder and the study's records)."""
        out: dict[str, Any] = {}
        for p in self.params:
            if isinstance(p, Choice):
                out[p.name] = list(p.values)
            else:
                spec: dict[str, Any] = {"low": p.low, "high": p.high}
                if p.log:
                    spec["log"] = True
                if p.step is not None:
                    spec["step"] = p.step
                out[p.name] = spec
        return out


def _describe(d: optuna.distributions.BaseDistribution) -> str:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return f"choices {list(d.choices)}"
    low, high, log = getattr(d, "low", None), getattr(d, "high", None), getattr(d, "log", False)
    return f"range {low}..{high}{' (log)' if log else ''}"


def _err(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"search space {source}: {key}: {problem}")


def _check_value(base: RunConfig, source: str, key: str, value: Any) -> Any:
    """``value`` coerced to the option's type and valid in a configuration; else an error naming ``key``."""
    try:
        cfg = merge(base, {key: value}, f"search space {source}").validate()
    except AelabError as err:
        raise _err(source, key, str(err)) from None
    return getattr(cfg, key)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _parse_range(base: RunConfig, source: str, key: str, spec: dict[str, Any], kind: str) -> Range:
    unknown = [k for k in spec if k not in RANGE_KEYS]
    if unknown:
        raise _err(source, key, f"unknown range key {unknown[0]!r}; a range takes {', '.join(RANGE_KEYS)}")
    if "low" not in spec or "high" not in spec:
        raise _err(source, key, "a range needs both low and high, e.g. {low: 1.0e-4, high: 1.0e-2}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    integer = kind.startswith("int")
    for name, v in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not _is_number(v):
            raise _err(source, key, f"{name} {v!r} is not a number")
        if integer and float(v) != int(v):
            raise _err(source, key, f"{name} {v!r} must be an integer ({key} is an integer option)")
    if not isinstance(log, bool):
        raise _err(source, key, f"log {log!r} must be true or false")
    if low > high:
        raise _err(source, key, f"low {low} > high {high}; swap them")
    if log and low <= 0:
        raise _err(source, key, f"a log range needs low > 0 (got {low})")
    if step is not None and step <= 0:
        raise _err(source, key, f"step {step} must be > 0")
    if log and step is not None and (not integer or step != 1):
        raise _err(source, key, "log and step cannot be combined; drop one of them")
    _check_value(base, source, key, low)
    _check_value(base, source, key, high)
    conv = int if integer else float
    return Range(key, conv(low), conv(high), log=log, step=None if step is None else conv(step), integer=integer)


def parse_space(data: Any, source: str, base: RunConfig | None = None) -> SearchSpace:
    """A search space from a parsed file; raises ``ConfigError`` naming the first bad key."""
    base = base or RunConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"search space {source} must be a mapping of option: [choices] or {{low, high}}")
    if not data:
        raise ConfigError(f"search space {source} is empty; list at least one option to search")
    known = fields_by_name()
    params: list[Param] = []
    for raw_key, spec in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise _err(source, str(raw_key), "unknown parameter; use training options such as activation, width, "
                                             "optimizer, lr, dropout, batch_norm, latent (see 'aelab train --help')")
        if key in NOT_SEARCHABLE:
            raise _err(source, str(raw_key), f"cannot be searched (a study keeps data and output fixed); set it "
                                             f"with --{key.replace('_', '-')} instead")
        if key in {p.name for p in params}:
            raise _err(source, str(raw_key), "given twice; keep one entry")
        kind = str(known[key].type)
        if isinstance(spec, list):
            if not spec:
                raise _err(source, str(raw_key), "empty choice list; give at least one value")
            values: list[Any] = []
            for v in spec:
                if isinstance(v, list | dict):
                    raise _err(source, str(raw_key), f"choice {v!r} must be a single value")
                c = _check_value(base, source, str(raw_key), v)
                if c not in values:
                    values.append(c)
            params.append(Choice(key, tuple(values)))
        elif isinstance(spec, dict):
            if not kind.startswith(("int", "float")):
                raise _err(source, str(raw_key), "is not numeric; give a list of choices instead of a range")
            params.append(_parse_range(base, source, str(raw_key), spec, kind))
        else:
            raise _err(source, str(raw_key), f"{spec!r} is neither a list of choices nor a {{low, high}} range")
    return SearchSpace(tuple(params), source)


def read_space_file(path: str | Path) -> Any:
    return read_options_file(path, "search space file")


def load_space(path: str | Path | None = None, base: RunConfig | None = None, packaged: str = "default"
               ) -> SearchSpace:
    """The search space in ``path`` (YAML or TOML), or when ``path`` is None the packaged space named
    ``packaged`` (``PACKAGED_SPACES``)."""
    if path is None:
        if packaged not in PACKAGED_SPACES:
            raise ConfigError(f"unknown packaged search space {packaged!r}; choose one of: "
                              f"{', '.join(PACKAGED_SPACES)}")
        text = resources.files("aelab.experiments.tune").joinpath(PACKAGED_SPACES[packaged]).read_text()
        return parse_space(load_yaml(text), f"({packaged})", base)
    return parse_space(read_space_file(path), str(path), base)
