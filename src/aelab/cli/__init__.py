"""The command line: ``aelab`` and its commands, one module per command group (see ``aelab.cli.app``)."""

from aelab.cli.app import main

__all__ = ["main"]
