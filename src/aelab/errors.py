"""The errors aelab raises for problems a user can fix.

Each carries a one-line message that names the problem and the fix; the command line prints it and exits
with ``exit_code`` (2 for usage errors) instead of showing a traceback.
"""

from __future__ import annotations


class AelabError(Exception):
    """A problem the user can fix; the message is one line naming the problem and the fix."""

    exit_code = 2


class DataError(AelabError):
    """Data set files missing, corrupted or malformed."""


class ConfigError(AelabError):
    """An invalid option, preset or config file."""


class RunError(AelabError):
    """A run folder that is missing, incomplete, corrupted or of another format."""


class TrainingDiverged(AelabError):
    """The loss became NaN or infinite; not a usage error, so it exits with 1."""

    exit_code = 1
