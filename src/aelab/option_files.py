"""Reading the files a user writes options in (``--config``, a search space ``--space``): YAML or TOML, bounded.

A file of options is small, so what parsing builds is bounded: at most ``MAX_BYTES`` of text, and YAML without
aliases (``*name``), whose references let a few lines expand to gigabytes once a value is copied or printed
("billion laughs"); such a file is refused in one line. Nesting too deep for the parser, numbers too long to
convert, a byte-order mark and an upper-case suffix (``.YAML``, ``.TOML``) are handled too. ``load_yaml`` is the
same bounded YAML for a file aelab wrote itself and reads back (a run's ``config.yaml``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from aelab.errors import ConfigError

MAX_BYTES = 1_000_000  # a config file holds a few dozen options: ~2 kB
TOML_SUFFIXES = (".toml",)  # anything else is read as YAML (.yaml, .yml), whatever the case of the suffix


class AliasRefused(yaml.YAMLError):
    """A YAML alias (``*name``) in a file of options."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (anchors alone are harmless: nothing refers to them)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasRefused(f"line {event.start_mark.line + 1}: an alias (*{event.anchor})")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases; raises ``yaml.YAMLError`` (``AliasRefused`` for an alias),
    ``RecursionError`` or ``ValueError`` (a number too long to convert)."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def read_options_file(path: str | Path, what: str = "config file") -> Any:
    """The data in the YAML or TOML file ``path`` (None when it is empty); every problem raises ``ConfigError``
    naming ``what`` and the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist; give the path of a .yaml or .toml file")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{what} {p} cannot be read ({err.strerror or err}); check its permissions") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{what} {p} is over {MAX_BYTES:,} bytes; a file of options holds a few lines, give that")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the options
        return tomllib.loads(text) if p.suffix.lower() in TOML_SUFFIXES else load_yaml(text)
    except AliasRefused as err:
        raise ConfigError(f"{what} {p} uses a YAML alias ({err}); write the value out: aliases are refused, since a "
                          f"few lines of them can expand to gigabytes") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {p} is not UTF-8 text; save it as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{what} {p} is nested too deeply to read; a file of options is a flat mapping") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{what} {p} cannot be parsed ({first}); fix its syntax") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a YAML (.yaml/.yml) or TOML (.toml) config file, as a dict (checked by ``aelab.config``)."""
    data = read_options_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data
