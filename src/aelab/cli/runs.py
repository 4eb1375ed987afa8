"""``aelab runs [FOLDER]``: one table of every run under a folder. Parse, call one function, print."""

from __future__ import annotations

import click


@click.command("runs")
@click.argument("folder", type=click.Path(file_okay=False), default="runs")
@click.option("--sort", "sort", default="name", show_default=True, metavar="KEY",
              help="KEY ascending or -KEY descending (--sort=-ssim), several separated by commas: -ssim,name")
@click.option("--filter", "filters", multiple=True, metavar="EXPR",
              help="keep the runs where every KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<N, ... holds, separated by spaces or "
                   "repeated; quote it for the shell: --filter 'model=vae latent>=16'. Text takes wildcards "
                   "(model=conv*); a run without the value (no metrics yet) fails a number test")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json"]), default="table",
              show_default=True, help="an aligned table, Markdown, CSV or JSON (csv and json: raw values and paths)")
def runs(folder: str, sort: str, filters: tuple[str, ...], fmt: str) -> None:
    """One table of every run under FOLDER (recursively; default: runs).

    \b
    Columns: run (its path under FOLDER), model, latent, data, epochs, precision, state, test SSIM / PSNR / MSE
    beside PCA's at the same latent size, training minutes, and a note on what to do next.
    States: finished (evaluated), trained (not evaluated yet: aelab evaluate RUN), running (a process holds
    the run's lock now), stopped (aelab train --resume RUN continues it), failed (never finished an epoch),
    damaged (a record cannot be read back: the note says which), foreign (a config.yaml aelab did not write).
    Keys for --sort and --filter: name, model, latent, data, epochs, precision, state, ssim, pca_ssim, psnr,
    pca_psnr, mse, pca_mse, minutes, note, path.

    Only each run's small records are read (metrics.json, config.yaml, a checkpoint's header), never its weights.
    """
    from aelab.experiments.runs_table import render, runs_table, select, summary  # lazy: keeps --help light

    rows = runs_table(folder)
    shown = select(rows, filters, sort)
    if fmt == "table" and not shown:
        click.echo(f"no runs under {folder}" + (f" match the filter ({summary(rows)} in all)" if rows else ""),
                   err=True)
        return
    click.echo(render(shown, fmt), nl=False)
    if fmt == "table":
        click.echo(summary(shown) + (f" (of {len(rows)})" if len(shown) != len(rows) else ""), err=True)


COMMANDS = (runs,)
