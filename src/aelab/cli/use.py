"""Commands that use a trained model: encode, decode, reconstruct, export. Parse, call one function, print."""

from __future__ import annotations

import click

from aelab.cli.options import (
    INPUT_HELP,
    batch_options,
    checkpoint_option,
    input_argument,
    input_options,
    out_folder,
    run_argument,
    scale_option,
    warnings_as_lines,
)


@click.command(epilog=INPUT_HELP)
@run_argument
@input_argument
@click.option("-o", "--out", required=True, type=click.Path(),
              help="codes file: .npy (names/labels in a sidecar <stem>.index.csv), .csv or .parquet; a link is "
                   "written through, a device or pipe written directly")
@input_options
@batch_options
def encode(run: str, input: str, out: str, resize: bool, data_dir: str | None, batch_size: int,
           limit: int | None, quiet: bool) -> None:
    """Encode the images of INPUT with the model of RUN into a file of latent codes."""
    from aelab.use.files import encode_to_file  # lazy: keeps 'aelab --help' free of torch

    with warnings_as_lines():
        res = encode_to_file(run, input, out, resize=resize, batch_size=batch_size, limit=limit,
                             progress=not quiet, data_dir=data_dir)
    click.echo(f"{res.n} codes -> {', '.join(str(p) for p in res.paths)}")


@click.command()
@run_argument
@click.argument("codes", type=click.Path())
@out_folder("the PNG images")
@scale_option()
@batch_options
def decode(run: str, codes: str, out: str, scale: int, force: bool, batch_size: int, limit: int | None,
           quiet: bool) -> None:
    """Decode the latent codes in CODES (.npy, .csv or .parquet, as 'aelab encode' writes) into PNG images."""
    from aelab.use.files import decode_to_pngs  # lazy: keeps 'aelab --help' free of torch

    res = decode_to_pngs(run, codes, out, batch_size=batch_size, limit=limit, progress=not quiet, force=force,
                         scale=scale)
    click.echo(f"{res.n} images -> {res.paths[0]}")


@click.command(epilog=INPUT_HELP)
@run_argument
@input_argument
@out_folder("the pairs")
@scale_option()
@input_options
@batch_options
def reconstruct(run: str, input: str, out: str, scale: int, force: bool, resize: bool, data_dir: str | None,
                batch_size: int, limit: int | None, quiet: bool) -> None:
    """Write 'original | reconstruction' PNG pairs of INPUT, SSIM in each file name and in index.csv."""
    from aelab.use.files import reconstruct_to_pngs  # lazy: keeps 'aelab --help' free of torch

    with warnings_as_lines():
        res = reconstruct_to_pngs(run, input, out, resize=resize, batch_size=batch_size, limit=limit,
                                  progress=not quiet, data_dir=data_dir, force=force, scale=scale)
    click.echo(f"{res.n} pairs -> {res.paths[0]} (mean SSIM {res.mean_ssim:.4f}; index {res.paths[1]})")


@click.command()
@run_argument
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "hub"]), default="onnx", show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="folder for encoder/decoder files [default: RUN/export; hub: RUN/hub]")
@checkpoint_option
@click.option("--force", is_flag=True, help="hub: replace what aelab wrote in the -o folder before")
def export(run: str, fmt: str, out: str | None, checkpoint: str, force: bool) -> None:
    """Export the encoder and decoder of RUN as ONNX or TorchScript files (dynamic batch axis), or the whole
    model in the Hugging Face Hub's format.

    \b
    encoder: images float32 (batch, 1, 28, 28) in [0, 1] -> codes (batch, latent)
    decoder: codes (batch, latent) -> images (batch, 1, 28, 28) in [0, 1]
    (a run on other images: their (C, H, W); RUN/export/export.json says which)
    hub: config.json, model.safetensors and a README.md model card (architecture, data, recipe, test metrics
    beside PCA, reconstructions, intended use), as huggingface_hub's from_pretrained expects; aelab.load(DIR)
    loads it; 'aelab push' uploads it. The run must be evaluated (the card shows its metrics).
    """
    if fmt == "hub":
        from aelab.use.hub import export_hub  # lazy: keeps 'aelab --help' free of torch

        done = export_hub(run, out, which=checkpoint, force=force)
        click.echo(f"hub folder -> {done.path} ({', '.join(done.files)}; {done.parameters:,} parameters)")
        return
    from aelab.use.export import export_run  # lazy: keeps 'aelab --help' free of torch

    res = export_run(run, fmt, out, which=checkpoint)
    click.echo(f"encoder -> {res.encoder}\ndecoder -> {res.decoder}\ninfo    -> {res.info}")
    if res.max_abs_diff:
        worst = max(res.max_abs_diff.values())
        click.echo(f"checked against PyTorch: max |difference| {worst:.2e}")


@click.command()
@run_argument
@click.argument("repo_id")
@checkpoint_option
@click.option("--private", is_flag=True, default=None, help="make the repository private when it is created")
@click.option("-m", "--message", default=None, help="the commit message")
def push(run: str, repo_id: str, checkpoint: str, private: bool | None, message: str | None) -> None:
    """Upload the model of RUN to the Hugging Face Hub repository REPO_ID (USER/NAME; made when missing).

    RUN is a run folder (exported to the Hub's format on the way, as 'aelab export RUN --format hub') or a folder
    that command wrote. Needs the optional package: pip install aelab[hub]; the token of 'hf auth login' or
    HF_TOKEN. Everything before the upload is tested; the upload itself is untested (aelab's test machines have no
    route to the Hub).
    """
    from aelab.use.hub import push as push_to_hub  # lazy: keeps 'aelab --help' free of torch

    click.echo(f"pushed -> {push_to_hub(run, repo_id, which=checkpoint, private=private, message=message)}")


COMMANDS = (encode, decode, reconstruct, export, push)
