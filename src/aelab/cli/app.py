"""The command line's entry point: the ``aelab`` group, with every command registered here at the top.

Commands live in one module per group and do no work of their own: parse, call one function, print. Heavy
modules (torch, the trainer) are imported inside the commands, so that ``aelab --help`` starts fast.
User mistakes (``AelabError``) print one line ``error: ...`` and exit with their code (2 for usage errors);
click's own usage errors exit 2 as well. Ctrl-C exits with 130, like a shell, wherever it lands: a job that can
be continued says how (``Interrupted``), any other moment prints one line (never click's "Aborted!" and 1).
"""

from __future__ import annotations

from typing import Any

import click

from aelab.allocator import keep_freed_memory
from aelab.cli import anomaly, experiments, explore, generate, report, runs, train, use
from aelab.errors import AelabError, Interrupted


class Group(click.Group):
    """Turns ``AelabError`` into a one-line message and its exit code, never a traceback; Ctrl-C into 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AelabError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except Interrupted as err:
            click.echo(str(err), err=True)
            ctx.exit(Interrupted.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(Interrupted.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110,
                                            "terminal_width": 110})
@click.version_option(package_name="aelab")
def main() -> None:
    """aelab: train, judge and explore autoencoders on Fashion-MNIST and MNIST.

    \b
    Quick start:
      aelab train                      train the default recipe (latent 64) and evaluate it
      aelab train --preset seed-2d     a 2-D latent space to look at
      aelab evaluate runs/NAME         test-set metrics beside the PCA baseline
    """
    keep_freed_memory()  # every command's tensors: no page faults per batch (allocator.py)


for _module in (train, report, use, generate, experiments, anomaly, explore, runs):
    for _command in _module.COMMANDS:
        main.add_command(_command)
