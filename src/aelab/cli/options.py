"""Options shared by commands: one ``--option`` per RunConfig field, and warnings shown as one line each."""

from __future__ import annotations

import types
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import click

from aelab.config import Bound, Notice, RunConfig, check_value


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
