"""The core commands: ``aelab train`` (train, evaluate, report) and ``aelab evaluate``. Parse, call, print."""

from __future__ import annotations

from typing import Any

import click

from aelab.cli.options import config_options, warnings_as_lines
from aelab.config import PRESET_HELP, PRESETS, resolve

PRESET_LIST = "\n".join(f"  {k:<16}{v}" for k, v in PRESET_HELP.items())


@click.command(epilog="\b\nPresets:\n" + PRESET_LIST)
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="start from a named recipe (see the list below)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML or TOML file of options (keys as below, with - or _)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="run folder to create [default: runs/<name>]")
@click.option("--resume", "resume", type=click.Path(file_okay=False), default=None,
              help="continue the run in this folder exactly where it stopped")
@click.option("--no-eval", is_flag=True, help="skip the test-set evaluation at the end")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@config_options
def train(preset: str | None, config_file: str | None, out: str | None, resume: str | None, no_eval: bool,
          quiet: bool, **options: Any) -> None:
    """Train an autoencoder into a run folder, then evaluate it on the test set.

    Options are read in this order, later ones winning: defaults, --preset, --config, the options given
    here. The run folder gets config.yaml, best/last checkpoints, history.csv and metrics.json.
    Ctrl-C writes a resumable checkpoint; --resume RUN continues it.
    """
    from aelab.experiments.jobs import resume_job, train_job  # lazy: keeps 'aelab --help' free of torch

    overrides = {k: v for k, v in options.items() if v is not None}
    if resume:
        if preset or config_file or out:
            raise click.UsageError("--resume takes the run's own config; drop --preset/--config/--out")
        with warnings_as_lines():
            run, metrics = resume_job(resume, overrides, progress=not quiet, evaluate=not no_eval)
    else:
        cfg = resolve(preset, config_file, overrides)
        with warnings_as_lines():
            run, metrics = train_job(cfg, out, progress=not quiet, evaluate=not no_eval)
    _print_result(run, metrics)


def _print_result(run: Any, metrics: dict[str, Any] | None) -> None:
    from aelab.evaluation import format_table  # lazy: keeps 'aelab --help' free of torch

    if metrics:
        click.echo(format_table(metrics))
        ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
        click.echo(f"\nrun: {run.path}")
        click.echo(f"test SSIM {ae['ssim']:.4f} (PCA {pca['ssim']:.4f}), PSNR {ae['psnr']:.2f} dB "
                   f"(PCA {pca['psnr']:.2f} dB), latent {metrics['run']['latent']}")
    else:
        click.echo(f"run: {run.path}")


@click.command()
@click.argument("run", type=click.Path())
def evaluate(run: str) -> None:
    """Evaluate the run folder RUN on its test split, beside PCA of the same latent size.

    Prints the table (SSIM, SSIM-7, PSNR, MSE, BCE, kNN-5 accuracy, trustworthiness; SSIM per class) and
    writes RUN/metrics.json.
    """
    from aelab.evaluation import evaluate_run  # lazy: keeps 'aelab --help' free of torch
    from aelab.runs import Run  # lazy: keeps 'aelab --help' free of torch

    r = Run.open(run)
    _print_result(r, evaluate_run(r))


COMMANDS = (train, evaluate)
