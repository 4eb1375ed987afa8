"""``aelab report RUN``: rebuild a run's figures and report.html from its folder (no retraining)."""

from __future__ import annotations

import click

from aelab.cli.options import run_argument, warnings_as_lines


@click.command("report")
@run_argument
@click.option("--tsne-sample", type=click.IntRange(min=10), default=None,
              help="test images t-SNE maps for a latent above 2-D (more is slower) [default: 2000]")
def report(run: str, tsne_sample: int | None) -> None:
    """Write RUN/figures/*.png and the self-contained page RUN/report.html.

    Everything is rebuilt from the run folder (config, best checkpoint, history.csv, metrics.json) and the
    run's test split; nothing is retrained. A folder without a checkpoint or metrics.json gets a one-line
    error naming the command that makes it.
    """
    from aelab.report import TSNE_SAMPLE, write_report  # lazy: keeps 'aelab --help' free of torch
    from aelab.runs import Run  # lazy: keeps 'aelab --help' free of torch

    with warnings_as_lines():  # e.g. figures a run of other images leaves out
        path = write_report(Run.open(run), tsne_sample=tsne_sample or TSNE_SAMPLE)
    click.echo(f"report: {path}")


COMMANDS = (report,)
