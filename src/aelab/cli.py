"""The command line: parse, call one function, print. No logic of its own.

User mistakes (``AelabError``) print one line ``error: ...`` and exit with their code (2 for usage errors);
click's own usage errors exit 2 as well.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any

import click

from aelab.config import PRESET_HELP, PRESETS, RunConfig, resolve
from aelab.errors import AelabError


class Group(click.Group):
    """Turns ``AelabError`` into a one-line message and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from aelab.train import Interrupted

        try:
            return super().invoke(ctx)
        except AelabError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except Interrupted as err:
            click.echo(str(err), err=True)
            ctx.exit(Interrupted.exit_code)


def _click_type(f: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a RunConfig field."""
    if f.metadata.get("choices"):
        return click.Choice(f.metadata["choices"]), False
    hint = typing.get_type_hints(RunConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    base = args[0] if args else str
    if base is bool:
        return None, True
    if base in (int, float):
        return base, False
    return str, False


def config_options(func: Any) -> Any:
    """One ``--option`` per RunConfig field; unset options stay None so they do not override a config file."""
    defaults = RunConfig()
    for f in reversed(fields(RunConfig)):
        flag = f.name.replace("_", "-")
        kind, is_flag = _click_type(f)
        default = getattr(defaults, f.name)
        help_text = f.metadata["help"] + ("" if default is None else f" [default: {default}]")
        if is_flag:
            func = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=help_text)(func)
        else:
            func = click.option(f"--{flag}", f.name, type=kind, default=None, help=help_text)(func)
    return func


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


PRESET_LIST = "\n".join(f"  {k:<16}{v}" for k, v in PRESET_HELP.items())


@main.command(epilog="\b\nPresets:\n" + PRESET_LIST)
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
    from aelab.jobs import resume_job, train_job

    overrides = {k: v for k, v in options.items() if v is not None}
    if resume:
        if preset or config_file or out:
            raise click.UsageError("--resume takes the run's own config; drop --preset/--config/--out")
        run, metrics = resume_job(resume, overrides, progress=not quiet, evaluate=not no_eval)
    else:
        cfg = resolve(preset, config_file, overrides)
        run, metrics = train_job(cfg, out, progress=not quiet, evaluate=not no_eval)
    _print_result(run, metrics)


def _print_result(run: Any, metrics: dict[str, Any] | None) -> None:
    from aelab.evaluate import format_table

    if metrics:
        click.echo(format_table(metrics))
        ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
        click.echo(f"\nrun: {run.path}")
        click.echo(f"test SSIM {ae['ssim']:.4f} (PCA {pca['ssim']:.4f}), PSNR {ae['psnr']:.2f} dB "
                   f"(PCA {pca['psnr']:.2f} dB), latent {metrics['run']['latent']}")
    else:
        click.echo(f"run: {run.path}")


@main.command()
@click.argument("run", type=click.Path())
def evaluate(run: str) -> None:
    """Evaluate the run folder RUN on its test split, beside PCA of the same latent size.

    Prints the table (SSIM, SSIM-7, PSNR, MSE, BCE, kNN-5 accuracy, trustworthiness; SSIM per class) and
    writes RUN/metrics.json.
    """
    from aelab.evaluate import evaluate_run
    from aelab.runs import Run

    r = Run.open(run)
    _print_result(r, evaluate_run(r))


# Commands of the other stages, each in its own module.
from aelab.cli_experiments import compare, study, tune  # noqa: E402
from aelab.cli_report import report  # noqa: E402
from aelab.cli_use import decode, encode, export, reconstruct  # noqa: E402

for _command in (report, encode, decode, reconstruct, export, tune, compare, study):
    main.add_command(_command)
