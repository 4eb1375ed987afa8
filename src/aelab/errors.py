"""Every error aelab raises for a problem a user can fix, in one place.

Each carries a one-line message that names the problem and the fix; the command line prints it and exits
with ``exit_code`` (2 for usage errors) instead of showing a traceback.
"""

from __future__ import annotations


class AelabError(Exception):
    """A problem the user can fix; the message is one line naming the problem and the fix."""

    exit_code = 2


class DataError(AelabError):
    """Data set files missing, corrupted or malformed."""


class InputError(DataError, ValueError):
    """Input images or codes that cannot be used; also a ``ValueError`` for scikit-learn's sake."""


class OutputError(AelabError):
    """An output path that cannot be written."""


class ConfigError(AelabError):
    """An invalid option, preset or config file."""


class RunError(AelabError):
    """A run folder that is missing, incomplete, corrupted or of another format."""


class ExportError(AelabError):
    """The model could not be exported (a missing optional package or an exporter failure)."""


class StorageError(AelabError):
    """The study storage cannot be opened (bad URL, missing driver, unreachable server, unwritable file)."""


class TrainingDiverged(AelabError):
    """The loss became NaN or infinite; not a usage error, so it exits with 1."""

    exit_code = 1


class TuneError(AelabError):
    """The study produced nothing to export (every trial failed); not a usage error."""

    exit_code = 1


class Interrupted(Exception):
    """Raised after a Ctrl-C once what was done is kept (the resumable checkpoint in training; the trained run in
    its evaluation); the message says how to continue. Exit code 130, like a shell; the command line gives any
    other Ctrl-C the same code."""

    exit_code = 130


def one_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: a foreign exception in our messages."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:limit] if text else type(err).__name__
