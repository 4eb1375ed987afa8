"""``aelab explore RUN``: the latent explorer, a local web app. Parse, call one function, print."""

from __future__ import annotations

import click

from aelab.cli.options import run_argument, threads_option


@click.command()
@run_argument
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; anything but loopback exposes the app (it has no authentication)")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port")
@click.option("--open/--no-open", "open_browser", default=True, show_default=True,
              help="open the page in the default browser")
@click.option("--map", "projection", type=click.Choice(["pca", "umap", "tsne", "auto"]), default="pca",
              show_default=True, help="how codes above 2-D are drawn on the plane (computed once, cached in RUN)")
@threads_option("CPU threads for the model (few keep the page responsive)", default=1)
def explore(run: str, host: str, port: int, open_browser: bool, projection: str, threads: int) -> None:
    """Walk through the latent space of RUN in the browser: the test set's codes by class, hover for an image,
    click an empty spot to decode it, interpolate between two images, neighbours, your own PNGs. Offline;
    Ctrl-C stops it."""
    from aelab.explorer import serve  # lazy: the explorer imports torch, 'aelab --help' must not

    serve(run, host=host, port=port, open_browser=open_browser, threads=threads, projection=projection,
          echo=click.echo)


COMMANDS = (explore,)
