"""The core commands: ``aelab train`` (train, evaluate, report) and ``aelab evaluate``. Parse, call, print."""

from __future__ import annotations

import warnings
from typing import Any

import click

from aelab.cli.options import (
    config_file_option,
    config_options,
    preset_option,
    quiet_option,
    run_argument,
    warnings_as_lines,
)
from aelab.config import PRESET_HELP, resolve
from aelab.errors import AelabError, Interrupted

PRESET_LIST = "\n".join(f"  {k:<16}{v}" for k, v in PRESET_HELP.items())


@click.command(epilog="\b\nPresets:\n" + PRESET_LIST)
@preset_option("start from a named recipe (see the list below)")
@config_file_option("YAML or TOML file of options (keys as below, with - or _)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="run folder to create [default: runs/<name>]")
@click.option("--resume", "resume", type=click.Path(file_okay=False), default=None,
              help="continue the run in this folder exactly where it stopped")
@click.option("--no-eval", is_flag=True, help="skip the test-set evaluation at the end")
@quiet_option
@click.option("--nproc", type=click.IntRange(1, 1024), default=None, metavar="N",
              help="train on N processes of this machine (DistributedDataParallel, started with torchrun's "
                   "launcher; --batch-size stays the global batch); for several machines run 'torchrun ... -m "
                   "aelab train' instead")
@config_options
def train(preset: str | None, config_file: str | None, out: str | None, resume: str | None, no_eval: bool,
          quiet: bool, nproc: int | None, **options: Any) -> None:
    """Train an autoencoder into a run folder, then evaluate it on the test set.

    Options are read in this order, later ones winning: defaults, --preset, --config, the options given
    here. The run folder gets config.yaml, best/last checkpoints, history.csv and metrics.json.
    Ctrl-C writes a resumable checkpoint; --resume RUN continues it.
    """
    from aelab.training import distributed  # lazy: keeps 'aelab --help' free of torch

    overrides = {k: v for k, v in options.items() if v is not None}
    if nproc and nproc > 1 and not distributed.launched():
        _launch(nproc, preset, config_file, out, resume, no_eval, quiet, overrides)
        return
    with distributed.process_group() as world:
        if world.rank > 0:  # torchrun's other processes: they train with rank 0, which writes and prints
            _follow()
            return
        _train(preset, config_file, out, resume, no_eval, quiet, overrides)


def _train(preset: str | None, config_file: str | None, out: str | None, resume: str | None, no_eval: bool,
           quiet: bool, overrides: dict[str, Any]) -> None:
    from aelab.experiments.jobs import resume_job, train_job  # lazy: keeps 'aelab --help' free of torch

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


def _follow() -> None:
    """A rank other than 0: rank 0 prints every message, so this one only passes its exit code on."""
    from aelab.training.distributed import follow  # lazy: keeps 'aelab --help' free of torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            follow()
    except (AelabError, Interrupted) as err:
        raise SystemExit(err.exit_code) from None


def _launch(nproc: int, preset: str | None, config_file: str | None, out: str | None, resume: str | None,
            no_eval: bool, quiet: bool, overrides: dict[str, Any]) -> None:
    """``aelab train --nproc N``: the same command on N processes started by torchrun's launcher."""
    from aelab.experiments.jobs import default_run_dir  # lazy: keeps 'aelab --help' free of torch
    from aelab.runs import Run  # lazy: keeps 'aelab --help' free of torch
    from aelab.training.distributed import launch  # lazy: keeps 'aelab --help' free of torch

    args = ["train"] + ["--quiet"] * quiet + ["--no-eval"] * no_eval
    if resume:
        if preset or config_file or out:
            raise click.UsageError("--resume takes the run's own config; drop --preset/--config/--out")
        path, threads = resume, overrides.get("threads") or Run.open(resume).config().threads
        args += ["--resume", resume]
    else:
        cfg = resolve(preset, config_file, overrides)  # errors here, before any process starts
        path, threads = str(out or default_run_dir(cfg)), cfg.threads  # one folder for every rank
        args += ["--out", path] + ["--preset", preset] * bool(preset) + ["--config", config_file] * bool(config_file)
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    code, message = launch(nproc, args, threads, path)
    if message:
        click.echo(f"error: {message}", err=True)
    if code:
        raise SystemExit(code)


def _print_result(run: Any, metrics: dict[str, Any] | None) -> None:
    from aelab.evaluation import format_table  # lazy: keeps 'aelab --help' free of torch

    if metrics:
        click.echo(format_table(metrics))
        ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
        click.echo(f"\nrun: {run.path}")
        click.echo(f"test SSIM {ae['ssim']:.4f} (PCA {pca['ssim']:.4f}), PSNR {ae['psnr']:.2f} dB "
                   f"(PCA {pca['psnr']:.2f} dB), latent {metrics['run']['latent']}")
        if "vae" in metrics:
            v = metrics["vae"]
            click.echo(f"VAE, nats per image: ELBO {v['elbo']:.2f} (reconstruction {v['reconstruction']:.2f}, KL "
                       f"{v['kl']:.2f}); IWAE (k={v['iwae_k']}, {v['iwae_images']} images) {v['iwae']:.2f} beside "
                       f"their ELBO {v['iwae_elbo']:.2f}; active units {v['active_units']}/{metrics['run']['latent']}")
        if "denoising" in metrics:
            from aelab.evaluation.denoise import format_denoising  # lazy: keeps 'aelab --help' free of torch

            click.echo("\n" + format_denoising(metrics["denoising"]))
    else:
        click.echo(f"run: {run.path}")


@click.command()
@run_argument
@click.option("--iwae-k", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="VAE runs: importance samples per image for the IWAE bound")
@click.option("--iwae-images", type=click.IntRange(0), default=1000, show_default=True,
              help="VAE runs: test images (a fixed sample; 0: all) the IWAE bound is computed on")
@click.option("--plain", "plain", type=click.Path(file_okay=False), default=None,
              help="a plain autoencoder's run folder (same data set), whose metrics the report shows beside these")
def evaluate(run: str, iwae_k: int, iwae_images: int, plain: str | None) -> None:
    """Evaluate the run folder RUN on its test split, beside PCA of the same latent size.

    Prints the table (SSIM, SSIM-7, PSNR, MSE, BCE, kNN-5 accuracy, trustworthiness; SSIM per class) and
    writes RUN/metrics.json. A VAE run also gets its ELBO, IWAE bound, KL per dimension and active units.
    """
    from aelab.evaluation import evaluate_run  # lazy: keeps 'aelab --help' free of torch
    from aelab.runs import Run  # lazy: keeps 'aelab --help' free of torch
    from aelab.tracking import log_evaluation  # lazy: keeps 'aelab --help' free of torch

    r = Run.open(run)
    with warnings_as_lines():  # e.g. the data changed since training
        metrics = evaluate_run(r, iwae_k=iwae_k, iwae_images=iwae_images, plain=plain)
        log_evaluation(r)  # a tracked run: its results, and a killed run's state settled
    _print_result(r, metrics)


COMMANDS = (train, evaluate)
