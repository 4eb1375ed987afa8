"""The experiment commands: ``aelab tune``, ``aelab compare``, ``aelab study``. Parse, call one function, print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aelab.cli.options import config_file_option, config_options, preset_option, quiet_option, threads_option
from aelab.config import resolve
from aelab.errors import ConfigError


def _latents(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--search-latent {text!r}: give integers separated by commas, e.g. 32,64,128") from None
    if not values:
        raise ConfigError("--search-latent: give at least one latent size, e.g. 32,64,128")
    return values


@click.command()
@click.option("--space", type=click.Path(dir_okay=False), default=None,
              help="search space file (YAML or TOML) [default: the packaged one: activation, width, optimizer, "
                   "lr, dropout, batch norm]")
@click.option("--search-latent", default=None, metavar="N,N,...",
              help="also search the latent size among these values, e.g. 32,64,128")
@click.option("--study", "study_name", default=None,
              help="study name [default: tune-<dataset>-<model>-<latent>-<objective>]")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="study folder [default: tune/<study>]")
@click.option("--storage", default=None, metavar="URL",
              help="database shared by workers on several machines, e.g. postgresql+psycopg://user:password@host/db "
                   "(pip install 'aelab[postgres]') [default: <out>/study.journal, Optuna's journal file: safe for "
                   "any number of worker processes on this machine]")
@click.option("--trials", type=int, default=20, show_default=True,
              help="finished trials the study should hold in all; a rerun runs only the missing ones")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="worker processes on this machine, sharing the study's storage; more 'aelab tune' with the same "
                   "--out (or --storage) may join, here or on other machines")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median",
              show_default=True, help="stops poor trials early, fed with the validation loss after each epoch")
@click.option("--objective", type=click.Choice(["ssim", "loss"]), default="ssim", show_default=True,
              help="validation SSIM (maximised) or validation loss (minimised); never the test set")
@click.option("--trial-epochs", type=int, default=None, help="epochs per trial [default: --epochs]")
@click.option("--trial-train-limit", type=int, default=None,
              help="training images per trial [default: --train-limit]")
@click.option("--trial-minutes", type=float, default=None,
              help="training minutes per trial (the schedule fitted to the epochs that fit; --trial-epochs is then "
                   "the most it plans): a slow configuration pays for its speed, as it will when retrained with "
                   "--max-minutes [default: no time budget]")
@click.option("--timeout", "timeout_minutes", type=float, default=None,
              help="stop starting trials after this many minutes")
@click.option("--sampler-seed", type=int, default=None, help="seed of the sampler [default: --seed]")
@click.option("--no-retrain", is_flag=True, help="skip retraining the best configuration on the full budget")
@click.option("--keep-checkpoints", is_flag=True, help="keep every trial's checkpoints (large)")
@click.option("--start-from-base/--no-start-from-base", default=True, show_default=True,
              help="trial 0 of a new study is the base configuration itself (its values of the searched options)")
@click.option("--heartbeat", type=int, default=15, hidden=True, help="seconds between a trial's heartbeats")
@preset_option()
@config_file_option("YAML or TOML file of training options (the full budget)")
@quiet_option
@config_options
def tune(space: str | None, search_latent: str | None, study_name: str | None, out: str | None,
         storage: str | None, trials: int, jobs: int, sampler: str, pruner: str, objective: str,
         trial_epochs: int | None, trial_train_limit: int | None, trial_minutes: float | None,
         timeout_minutes: float | None,
         sampler_seed: int | None, no_retrain: bool, keep_checkpoints: bool, start_from_base: bool, heartbeat: int,
         preset: str | None,
         config_file: str | None, quiet: bool, **options: Any) -> None:
    """Search hyperparameters with Optuna; rerunning the same command continues the study.

    The training options (--preset, --config, --epochs, ...) are the full budget the best configuration is
    retrained with; --trial-epochs, --trial-train-limit and --trial-minutes make the trials cheaper. Each trial
    is scored on the validation split. The study folder gets trials.csv/.md, best.yaml (for 'aelab train --config'),
    figures/ (history, importances, parallel coordinates), the retrained best run and summary.md.
    """
    # lazy: keeps 'aelab --help' free of torch
    from aelab.experiments.tune import TuneSettings, load_space, summary_markdown
    from aelab.experiments.tune import tune as run_tune

    base = resolve(preset, config_file, {k: v for k, v in options.items() if v is not None})
    search = load_space(space, base)
    latents = _latents(search_latent)
    if latents:
        search = search.with_choice("latent", latents, base)
    latent = "search" if "latent" in search.names else base.latent
    name = study_name or f"tune-{base.dataset_name}-{base.model_label}-{latent}-{objective}"
    settings = TuneSettings(
        base=base, space=search, out=Path(out) if out else Path("tune") / name, study=name, storage=storage,
        trials=trials, sampler=sampler, pruner=pruner, objective=objective, jobs=jobs,
        sampler_seed=base.seed if sampler_seed is None else sampler_seed, trial_epochs=trial_epochs,
        trial_train_limit=trial_train_limit, trial_minutes=trial_minutes, timeout_minutes=timeout_minutes,
        retrain=not no_retrain,
        keep_checkpoints=keep_checkpoints, start_from_base=start_from_base, heartbeat=heartbeat,
        progress=not quiet)
    click.echo(summary_markdown(run_tune(settings)), nl=False)


@click.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default="comparison", show_default=True,
              help="folder for comparison.md/.csv/.html and the SSIM-vs-latent plot")
@click.option("--title", default="Comparison of runs", show_default=True)
def compare(runs: tuple[str, ...], out: str, title: str) -> None:
    """One table across evaluated run folders RUNS (any data sets): test SSIM, SSIM-7, PSNR, MSE, kNN
    accuracy, PCA SSIM at the same latent size, size and training time; as Markdown, CSV and HTML."""
    # lazy: keeps 'aelab --help' free of torch
    from aelab.report.compare import compare as run_compare
    from aelab.report.compare import markdown_table

    rows, files = run_compare(list(runs), out, title)
    click.echo(markdown_table(rows))
    click.echo(f"written: {', '.join(str(p) for p in files.values())}")


@click.command()
@click.option("--quick", is_flag=True,
              help="small budgets (6,000 images, 3 epochs; 5 two-epoch trials on 3,000 images per tuning "
                   "study), meant to finish in under 30 minutes on 2 CPU cores")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="folder for the tables, plots and README.md [default: study or study-quick]")
@click.option("--runs", type=click.Path(file_okay=False), default=None,
              help="folder for the run folders and tuning studies [default: <out>/runs]")
@click.option("--jobs", type=int, default=1, show_default=True, help="tuning worker processes")
@threads_option("CPU threads for torch [default: all cores]")
@click.option("--no-train", is_flag=True,
              help="train nothing: write the tables of the finished steps (the others stay pending), e.g. while "
                   "the study runs elsewhere")
@quiet_option
def study(quick: bool, out: str | None, runs: str | None, jobs: int, threads: int | None, no_train: bool,
          quiet: bool) -> None:
    """Reproduce the published study on Fashion-MNIST: (1) base vs modified vs tuned at latent 64 and 128,
    (2) a latent sweep 2-256 of the modified model against PCA, (3) the dense 2-D model on MNIST.

    Rerunning the same command skips finished runs, resumes interrupted ones and continues the tuning
    studies. Tables (Markdown, CSV, HTML), SSIM-vs-latent plots and README.md go to --out.

    Every finished step is also recorded in --out's study.json (configuration, table row, machine): where its
    run folder is gone (a fresh checkout of committed tables), a step whose recorded configuration is the one
    the plan asks for is read back, not trained. To train such a step again, delete its run folder and its
    entry under "records" in study.json.
    """
    import shlex
    import sys

    from aelab.experiments.study import FULL, QUICK, run_study  # lazy: keeps 'aelab --help' free of torch
    from aelab.experiments.tune.settings import MAX_JOBS  # lazy: keeps 'aelab --help' free of torch

    if not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"--jobs {jobs}: use 1 to {MAX_JOBS} worker processes")

    # the command that runs the study (the README shows it), not the one that only writes its tables
    command = "aelab " + shlex.join(a for a in sys.argv[1:] if a != "--no-train") if sys.argv[1:2] == ["study"] else ""
    result = run_study(out or ("study-quick" if quick else "study"), runs, QUICK if quick else FULL, jobs=jobs,
                       threads=threads, progress=not quiet, command=command, train=not no_train)
    click.echo(f"study written to {out or ('study-quick' if quick else 'study')}/README.md "
               f"({result['wall_seconds'] / 60:.1f} min)")


COMMANDS = (tune, compare, study)
