"""Options shared by commands: one ``--option`` per RunConfig field, the option blocks several commands take
(declared here once, each command reuses them), and warnings shown as one line each."""

from __future__ import annotations

import types
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import click

from aelab.config import PRESETS, Bound, Notice, RunConfig, check_value
from aelab.errors import ConfigError


def _click_type(f: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a RunConfig field."""
    if f.metadata.get("choices"):
        return click.Choice(f.metadata["choices"]), False
    hint = typing.get_type_hints(RunConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    base = args[0] if args else str
    if base is bool:
        return None, True
    if base in (int, float):
        return base, False
    return str, False


def _valid_text(f: Any) -> str:
    """A number option's valid values, as RunConfig states them: 'between 1 and 1024', 'in (0, 16]', '1 or 3'."""
    valid = f.metadata.get("valid")
    if isinstance(valid, Bound):
        return valid.words()
    return " or ".join(map(str, valid)) if valid else ""


def seed_option(help: str) -> Any:
    """``--seed``, checked against the run configuration's seed range (every generator aelab seeds takes it):
    outside it, one line ``error: ...`` and exit code 2."""
    def check(ctx: click.Context, param: click.Parameter, value: int) -> int:
        return check_value("seed", value)
    return click.option("--seed", type=int, default=0, show_default=True, callback=check, help=help)


def _joined(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> str | None:
    """A repeated option's values as one comma-separated list (None when it is not given)."""
    return ",".join(values) if values else None


def config_options(func: Any) -> Any:
    """One ``--option`` per RunConfig field; unset options stay None so they do not override a config file."""
    defaults = RunConfig()
    for f in reversed(fields(RunConfig)):
        flag = f.name.replace("_", "-")
        kind, is_flag = _click_type(f)
        default = getattr(defaults, f.name)
        notes = [w for w in (_valid_text(f), "" if default is None else f"default: {default}") if w]
        help_text = f.metadata["help"] + (f" [{'; '.join(notes)}]" if notes else "")
        if is_flag:
            func = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=help_text)(func)
        elif str(f.type).startswith("list[str]"):  # names: comma separated, or the option repeated
            func = click.option(f"--{flag}", f.name, type=str, multiple=True, callback=_joined, help=help_text)(func)
        else:
            func = click.option(f"--{flag}", f.name, type=kind, default=None, help=help_text)(func)
    return func


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show aelab's warnings (e.g. resized images) as one 'warning: ...' line each, and its notices (the model
    chosen for the data) as one 'note: ...' line each."""
    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        click.echo(f"{'note' if issubclass(category, Notice) else 'warning'}: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


# ------------------------------------------------------------------------------------ blocks several commands take
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

INPUT_HELP = ("INPUT is a data set split (fashion-mnist:test, mnist:train; data:train, data:val or data:test: the "
              "run's own splits, also of your own images), an IDX images file (.gz or raw; labels come along from "
              "the matching labels file beside it), a .npy array (n, 28, 28), (n, 1, 28, 28) or (n, 784) of uint8 "
              "0..255 or float 0..1 (memory-mapped, read in batches; other shapes for a model of other images), a "
              ".npz holding x (and y), or a folder of PNG images (grey or colour, converted to the model's "
              "channels; one sub-folder per class gives labels).")

run_argument: Decorator = click.argument("run", type=click.Path())
input_argument: Decorator = click.argument("input", type=str)  # what INPUT_HELP describes
quiet_option: Decorator = click.option("--quiet", "-q", is_flag=True, help="no progress bars")
checkpoint_option: Decorator = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                                            show_default=True, help="the run's checkpoint: best validation or last")


def _checked(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback checking an option against the run configuration's field ``key`` (``config.check_value``):
    outside its range, one line ``error: ...`` and exit code 2."""
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        return check_value(key, value, param.opts[0].lstrip("-"))
    return check


def threads_option(help: str, default: int | None = None) -> Decorator:
    """``--threads``, checked against the run configuration's range (``torch.set_num_threads`` takes an int)."""
    return click.option("--threads", type=int, default=default, show_default=default is not None,
                        callback=_checked("threads"), help=help)


def preset_option(help: str = "start from a named recipe") -> Decorator:
    return click.option("--preset", type=click.Choice(list(PRESETS)), default=None, help=help)


def config_file_option(help: str) -> Decorator:
    """``--config FILE``: a YAML or TOML file of options, given to the command as ``config_file``."""
    return click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help=help)


def scale_option(what: str = "the PNGs") -> Decorator:
    return click.option("--scale", type=click.IntRange(1, 16), default=1, show_default=True, help=f"enlarge {what}")


def batch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--batch-size``, ``--limit`` and ``-q``, as every command that runs a model over a file of images takes
    them."""
    func = click.option("--batch-size", type=click.IntRange(1, 1 << 20), default=1024, show_default=True,
                        help="images per batch (bounds the memory used)")(func)
    func = click.option("--limit", type=click.IntRange(1), default=None, help="only the first N images")(func)
    return quiet_option(func)


def input_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--resize`` and ``--data-dir``, as every command that reads an INPUT (``INPUT_HELP``) takes them."""
    func = click.option("--resize", is_flag=True,
                        help="resize images that are not of the model's size (28x28 for the built-in data sets) the "
                             "way the run was trained (its --resize), with a warning, instead of stopping")(func)
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="folder of the data set files, for a data set split INPUT")(func)


def out_folder(what: str) -> Decorator:
    """``-o`` (a folder for ``what``) and ``--force``, as every command that writes a folder of PNGs takes them."""
    def options(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--force", is_flag=True,
                            help="replace aelab's earlier output in the -o folder (the files it listed there); a "
                                 "folder holding anything else is refused")(func)
        return click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
                            help=f"folder for {what}: new or empty, unless --force; never the input, inside it or "
                                 f"holding it")(func)
    return options


def quantile_option(help: str, default: float | None) -> Decorator:
    """``--quantile`` of an anomaly threshold: strictly between 0 and 1 (NaN is not), else one line, exit code 2,
    before any work (``aelab score --quantile 2`` ended in a traceback after scoring)."""
    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is not None and not 0.0 < value < 1.0:
            raise ConfigError(f"--quantile {value:g}: give a quantile in (0, 1), e.g. 0.95")
        return value
    return click.option("--quantile", type=float, default=default, show_default=default is not None, callback=check,
                        help=help)
