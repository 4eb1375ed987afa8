"""The anomaly-detection and denoising commands: ``aelab anomaly``, ``aelab score``, ``aelab denoise``.

Parse, call one function, print; the heavy modules are imported inside the commands (``# lazy:``).
"""

from __future__ import annotations

import math
from typing import Any

import click

from aelab.cli.options import (
    INPUT_HELP,
    batch_options,
    config_file_option,
    config_options,
    input_argument,
    input_options,
    out_folder,
    quantile_option,
    quiet_option,
    run_argument,
    scale_option,
    seed_option,
    warnings_as_lines,
)
from aelab.errors import ConfigError

SCORE_CHOICES = ("auto", "mse", "ssim", "knn", "mse+knn", "ssim+knn", "elbo")


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """``--threshold``: a finite number (NaN flagged nothing, inf everything, without a word)."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"invalid threshold {value}; give a finite number, or --quantile instead")
    return value


@click.command()
@click.option("--normal", required=True, metavar="CLASS|all",
              help="the normal class (name or index), or 'all' for the ten one-class runs and one table")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="folder of the runs and the table [default: runs/anomaly-<dataset>-<class or all>]")
@quantile_option("threshold: this quantile of the scores of normal validation images", 0.95)
@click.option("--score", type=click.Choice(SCORE_CHOICES), default="auto", show_default=True,
              help="the detector's score; auto: the highest validation AUROC (never the test set)")
@click.option("--no-figures", is_flag=True, help="skip the figures")
@config_file_option("YAML or TOML file of training options for the one-class runs")
@quiet_option
@config_options
def anomaly(normal: str, out: str | None, quantile: float, score: str, no_figures: bool, config_file: str | None,
            quiet: bool, **options: Any) -> None:
    """One-class anomaly detection: train on the normal class only, test on the whole test set.

    The other classes' test images are the anomalies. Reports AUROC, average precision, and precision /
    recall / F1 at the threshold, for each score of the autoencoder (MSE, 1 - SSIM, latent kNN, each
    reconstruction score + kNN;
    negative ELBO for a VAE) beside PCA of the same latent size and an Isolation Forest on raw pixels.
    Training options default to the one-class recipe (dense, latent 8, MSE, 10 epochs; docs/anomaly.md);
    every option of 'aelab train' changes it. A finished run in OUT is reused, an interrupted one resumed.
    """
    # lazy: keeps 'aelab --help' free of torch
    from aelab.evaluation.one_class import format_anomaly_table
    from aelab.experiments.anomaly import anomaly_job

    overrides = {k: v for k, v in options.items() if v is not None}
    dataset = overrides.pop("dataset", "fashion-mnist")
    with warnings_as_lines():
        res = anomaly_job(normal, dataset=dataset, out=out, config_file=config_file, overrides=overrides,
                          quantile=quantile, score=score, progress=not quiet, figures=not no_figures)
    if len(res.results) == 1:
        click.echo(format_anomaly_table(res.results[0]))
        click.echo(f"\nrun: {res.results[0]['folder']} (anomaly.json, detector.safetensors, figures/)")
    else:
        from aelab.experiments.anomaly import markdown_summary  # lazy: keeps 'aelab --help' free of torch

        click.echo(markdown_summary(res.summary))
        click.echo(f"\nmean AUROC {res.summary['mean']['auroc']:.4f} (PCA {res.summary['mean']['auroc_pca']:.4f}, "
                   f"Isolation Forest {res.summary['mean']['auroc_iforest']:.4f}); every class above PCA: "
                   f"{res.summary['every_class_above_pca']}; {res.summary['wall_seconds']:.0f} s")
    click.echo(f"table: {res.out / 'anomaly.md'}")


@click.command(epilog=INPUT_HELP)
@run_argument
@input_argument
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="CSV file of the scores")
@click.option("--score", type=click.Choice(SCORE_CHOICES), default=None,
              help="score to use [default: the run's detector's, else mse]")
@quantile_option("threshold quantile of the run's normal validation scores [default: the detector's, else 0.95]",
                 None)
@click.option("--threshold", type=float, default=None, callback=_finite, help="flag scores above this value instead")
@input_options
@batch_options
def score(run: str, input: str, out: str, score: str | None, quantile: float | None, threshold: float | None,
          resize: bool, data_dir: str | None, batch_size: int, limit: int | None, quiet: bool) -> None:
    """Score the images of INPUT with the anomaly detector of RUN: one CSV row per image, score and flag.

    A run made by 'aelab anomaly' carries its detector (score and threshold); for any other run the
    threshold is fitted on its own validation split (--quantile of their scores).
    """
    from aelab.use.detect import score_to_csv  # lazy: keeps 'aelab --help' free of torch

    with warnings_as_lines():
        res = score_to_csv(run, input, out, score=score, quantile=quantile, threshold=threshold, resize=resize,
                           batch_size=batch_size, limit=limit, progress=not quiet, data_dir=data_dir)
    click.echo(f"{res.n} images scored -> {res.path}; {res.flagged} flagged as anomalies "
               f"({res.flagged / max(res.n, 1):.1%}) by {res.score} > {res.threshold:.6g}")


@click.command(epilog=INPUT_HELP)
@run_argument
@input_argument
@out_folder("the PNGs")
@click.option("--add-noise", default=None, metavar="KIND:LEVEL",
              help="corrupt the (clean) inputs first, e.g. gaussian:0.3, and write noisy | denoised | clean")
@seed_option("seed of --add-noise")
@scale_option()
@input_options
@batch_options
def denoise(run: str, input: str, out: str, add_noise: str | None, seed: int, scale: int, force: bool,
            resize: bool, data_dir: str | None, batch_size: int, limit: int | None, quiet: bool) -> None:
    """Denoise the images of INPUT with the model of RUN (best trained with --noise): 'input | denoised' PNGs."""
    from aelab.use.detect import denoise_to_pngs  # lazy: keeps 'aelab --help' free of torch

    with warnings_as_lines():
        res = denoise_to_pngs(run, input, out, add_noise=add_noise, seed=seed, resize=resize, batch_size=batch_size,
                              limit=limit, progress=not quiet, data_dir=data_dir, force=force, scale=scale)
    extra = f" (mean SSIM against the clean images {res.mean_ssim:.4f})" if res.mean_ssim is not None else ""
    click.echo(f"{res.n} images denoised -> {res.path}{extra}")


COMMANDS = (anomaly, score, denoise)
