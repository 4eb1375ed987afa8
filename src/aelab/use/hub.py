"""A trained model in the Hugging Face Hub's format: ``aelab export RUN --format hub``, ``aelab push RUN REPO``.

The folder follows the convention of ``huggingface_hub``'s ``from_pretrained`` (``ModelHubMixin`` and
``PyTorchModelHubMixin``): at its top, ``config.json`` (the model's hyperparameters, which rebuild it, with the
aelab version and the run's recipe) and ``model.safetensors`` (the weights, a plain safetensors file: any
``safetensors.torch.load_file`` reads it), beside ``README.md``, the model card (YAML front matter with
``library_name: aelab``, tags, datasets and metrics; then the architecture, the data, the training recipe, the
test metrics beside PCA's, the reconstruction figure, the intended use and the limits). ``aelab.load(DIR)`` loads
the folder (or a snapshot of the repository: ``huggingface_hub.snapshot_download``) back as any run.

Local paths stay out of it (the folder is for sharing): a data set of the user's own images is named by its
kind and folder name only, ``data_dir`` is dropped. The folder is written whole or not at all (``StagedDir``).
``push`` uploads it with ``huggingface_hub.HfApi().upload_folder`` (the optional extra ``aelab[hub]``); this
project's machines have no route to the Hub, so the upload itself is untested here (everything before it is).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from aelab._version import __version__
from aelab.config import DATASET_NAMES, SOURCE_KINDS, RunConfig, merge
from aelab.errors import AelabError, ExportError, RunError, one_line
from aelab.evaluation.evaluate import COLUMNS
from aelab.files import StagedDir
from aelab.models import VAE, Autoencoder, build_model, count_parameters
from aelab.runs import Run, load_weights

HUB_FORMAT = "aelab-hub-1"
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"  # huggingface_hub.constants
FIGURE_NAME = "reconstructions.png"
HUB_DATASETS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "mnist": "ylecun/mnist"}  # ids on the Hub
TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}
NO_PACKAGE = "aelab push needs the huggingface_hub package: pip install aelab[hub]"


@dataclass
class HubExport:
    path: Path
    files: list[str]
    parameters: int


@dataclass
class HubModel:
    """What a hub folder holds: the model, rebuilt, and what ``aelab.load`` gives beside it."""

    model: Autoencoder
    classes: tuple[str, ...] | None
    config: RunConfig | None
    info: dict[str, Any]


# ------------------------------------------------------------------------------------------ sharing without paths
def shared_dataset(spec: str) -> str:
    """A data set spec without local paths: a built-in as it is, ``KIND:PATH`` as ``KIND:<folder name>``."""
    kind, sep, path = spec.partition(":")
    return f"{kind}:{Path(path).name}" if sep and kind in SOURCE_KINDS else spec


def shared_recipe(cfg: RunConfig) -> dict[str, Any]:
    """The run's configuration as shared: every option, with the data set's path cut to its name (no local
    folder, no tracking server)."""
    recipe = cfg.to_dict()
    recipe.update(dataset=shared_dataset(cfg.dataset), data_dir=None, track=None, tracking_uri=None)
    return recipe


def _data_source(dataset: str) -> str:
    if dataset in DATASET_NAMES:
        return f"{TITLES.get(dataset, dataset)} (aelab's reader of the published IDX files)"
    kind = dataset.partition(":")[0]
    return f"the trainer's own images: {SOURCE_KINDS.get(kind, kind)} ({shared_dataset(dataset)})"


# ------------------------------------------------------------------------------------------ the card
def _front_matter(cfg: RunConfig, vae: bool) -> str:
    tags = ["aelab", "pytorch", "variational-autoencoder" if vae else "autoencoder", "image-reconstruction",
            "dimensionality-reduction"]
    meta: dict[str, Any] = {"library_name": "aelab", "tags": tags + [cfg.dataset_name]}
    if cfg.dataset in HUB_DATASETS:
        meta["datasets"] = [HUB_DATASETS[cfg.dataset]]
    meta["metrics"] = ["ssim", "psnr", "mse"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
    lines = ["| metric (test set) | this model | PCA, same latent size |", "|---|---:|---:|"]
    for key, label, fmt in COLUMNS:
        if key in ae and key in pca:
            lines.append(f"| {label} | {fmt.format(ae[key])} | {fmt.format(pca[key])} |")
    return lines


def model_card(name: str, model: Autoencoder, cfg: RunConfig, metrics: dict[str, Any], record: dict[str, Any],
               figure: bool, repo_id: str | None = None) -> str:
    """The README.md of a hub folder: front matter, then what the model is, was trained on and achieves."""
    c, h, w = model.image_shape
    vae = isinstance(model, VAE)
    kind = "variational autoencoder" if vae else "autoencoder"
    data = TITLES.get(cfg.dataset, cfg.dataset_name)
    run, split = metrics.get("run", {}), metrics.get("split", {})
    classes = record.get("classes") or split.get("classes") or []
    images = record.get("images") or {k: split.get(k) for k in ("train", "val", "test")}
    fingerprint = (record.get("fingerprint") or {}).get("content") or split.get("fingerprint")
    seconds = run.get("train_seconds")
    took = "" if not isinstance(seconds, int | float) else f"{seconds:.0f} s" if seconds < 60 else \
        f"{seconds / 60:.1f} minutes"
    epochs = run.get("epochs")
    article = "An" if kind[0] in "aeiou" else "A"
    hp = "\n".join(f"| {k} | {v} |" for k, v in model.hparams.items() if k not in ("model", "latent"))
    where = repo_id or "USER/REPO"
    out = [
        _front_matter(cfg, vae),
        f"# {name}: a {cfg.model} {kind}, latent size {model.latent}, trained on {data}", "",
        f"{article} {kind} trained with [aelab](https://pypi.org/project/aelab/) {__version__}: it encodes a "
        f"{c}x{h}x{w} image (pixels in [0, 1]) into {model.latent} numbers and decodes them back.", "",
        "## Use", "", "```python",
        "import aelab                                    # pip install aelab huggingface_hub",
        "from huggingface_hub import snapshot_download", "",
        f'model = aelab.load(snapshot_download("{where}"))   # or aelab.load("a/local/folder")',
        "codes = model.encode(images)       # images: (n, H, W) uint8 or float in [0, 1] -> (n, latent)",
        "recon = model.decode(codes)        # -> (n, H, W) in [0, 1]",
        "```", "",
        "`model.safetensors` is a plain safetensors file of the PyTorch state dict; `config.json` holds the "
        "hyperparameters that rebuild the architecture (`aelab.models.build_model`).", "",
        "## Architecture", "",
        "| | |", "|---|---|", f"| model | {cfg.model} ({kind}) |", f"| latent size | {model.latent} |",
        f"| parameters | {count_parameters(model):,} |", f"| image shape (C, H, W) | {c}, {h}, {w} |", hp, "",
        "## Data", "",
        f"- source: {_data_source(cfg.dataset)}",
        f"- images: {c}x{h}x{w}, pixels scaled to [0, 1]",
        f"- classes ({len(classes)}): {', '.join(map(str, classes)) or 'none'}",
        "- images used: " + ", ".join(f"{k} {v:,}" for k, v in images.items() if isinstance(v, int)),
        f"- content fingerprint (sha256 of the pixels): `{fingerprint or 'not recorded'}`", "",
        "## Training recipe", "",
        f"{epochs if epochs is not None else '?'} epoch{'' if epochs == 1 else 's'} (best at epoch "
        f"{run.get('best_epoch', '?')}; ended: {run.get('stopped', '?')}), {run.get('precision') or cfg.precision} "
        f"arithmetic{f', {took} of training' if took else ''}; objective: {cfg.objective()}. The run's "
        "configuration (`aelab train --config FILE` takes it):", "",
        "```yaml", yaml.safe_dump(shared_recipe(cfg), sort_keys=False).rstrip(), "```", "",
        "## Test metrics", "",
        f"On the {images.get('test', '?'):,} test images, beside PCA with the same latent size fitted on the run's "
        "own training images:" if isinstance(images.get("test"), int) else "On the test images, beside PCA:", "",
        *_metrics_table(metrics), "",
        f"{metrics.get('ssim_definition', '')}", "",
    ]
    if figure:
        out += ["## Reconstructions", "",
                f"![Random test images, this model's reconstructions and PCA's]({FIGURE_NAME})", ""]
    out += [
        "## Intended use and limits", "",
        f"- Meant for images like its training data ({data}, {c}x{h}x{w}): compressing them to {model.latent} "
        "numbers, looking at the latent space, finding similar images by their codes, scoring unusual images by "
        "their reconstruction error, and as a baseline in teaching and research.",
        "- The metrics above hold for that data's test split only; other kinds or sizes of images reconstruct "
        "worse (aelab refuses images of another shape unless told to resize them).",
        "- Reconstructions are lossy and blurred in fine detail; it is neither a classifier nor a generator of "
        "realistic images" + (" (samples of its prior are rough)" if vae else "") + ".",
        "- Not for decisions about people. No license was set by aelab: the owner of the model adds one.", "",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ export
def export_hub(run: str | os.PathLike, out: str | os.PathLike | None = None, which: str = "best",
               force: bool = False, repo_id: str | None = None) -> HubExport:
    """Write the model of the run folder ``run`` into ``out`` (default ``RUN/hub``) in the Hub's format."""
    r = Run.open(run)
    cfg = r.config()
    metrics = r.load_metrics()
    if not all(isinstance(metrics.get(k), dict) and isinstance(metrics[k].get("overall"), dict)
               for k in ("autoencoder", "pca")):
        raise RunError(f"{r.metrics} lacks the test metrics beside PCA's; rebuild it with 'aelab evaluate {r.path}'")
    model = r.load_model(which)
    record = r.load_data() or {}
    figure = r.reconstructions_figure
    target = Path(out) if out is not None else r.hub
    reads = [r.config_file, r.metrics, r.best if which == "best" else r.last, r.data_record, figure]
    config = {"format": HUB_FORMAT, "library_name": "aelab", "aelab_version": __version__,
              "hparams": model.hparams, "latent": model.latent, "image_shape": list(model.image_shape),
              "classes": list(record.get("classes") or metrics.get("split", {}).get("classes") or []) or None,
              "dataset": shared_dataset(cfg.dataset), "run": r.path.name, "checkpoint": which,
              "parameters": count_parameters(model), "recipe": shared_recipe(cfg)}
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    inside = r.path.resolve() in target.resolve().parents
    lock: AbstractContextManager[None] = r.writing() if inside else nullcontext()
    with lock, StagedDir(target, force=force, inputs=reads) as staged:
        staged.write(CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
        staged.write(WEIGHTS_NAME, st_save(weights, metadata={"format": "pt", "aelab_format": HUB_FORMAT}))
        has_figure = figure.is_file()
        if has_figure:
            staged.write(FIGURE_NAME, figure.read_bytes())
        card = model_card(r.path.name, model, cfg, metrics, record, has_figure, repo_id)
        staged.write(CARD_NAME, card.encode())
        files = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME] + ([FIGURE_NAME] if has_figure else [])
        path = staged.commit()
    return HubExport(Path(path), files, config["parameters"])


# ------------------------------------------------------------------------------------------ loading back
def is_hub_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding aelab's hub config (the cheap test ``aelab.load`` makes)."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_bytes()).get("format") == HUB_FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def read_hub(path: str | os.PathLike) -> HubModel:
    """The model of a hub folder, rebuilt from ``config.json`` and ``model.safetensors``; ``RunError`` naming
    the problem when a file is missing, damaged or of another architecture."""
    p = Path(path)
    info = json.loads((p / CONFIG_NAME).read_bytes())
    hp = info.get("hparams")
    if not isinstance(hp, dict) or "model" not in hp or "latent" not in hp:
        raise RunError(f"{p / CONFIG_NAME} has no model description (hparams); export the run again")
    hp = dict(hp)
    try:
        model = build_model(hp.pop("model"), hp.pop("latent"), **hp)
    except (AelabError, TypeError, ValueError) as err:
        raise RunError(f"{p / CONFIG_NAME} describes a model this aelab cannot build ({one_line(err)}); use the "
                       f"aelab version it names ({info.get('aelab_version')})") from None
    weights_file = p / WEIGHTS_NAME
    if not weights_file.is_file():
        raise RunError(f"{p} has no {WEIGHTS_NAME}; download or export the folder again")
    try:
        weights = load_file(weights_file)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RunError(f"{weights_file} is damaged ({one_line(err, 80)}); download or export it again") from None
    load_weights(model, weights, weights_file, f"{weights_file} does not fit the model of {CONFIG_NAME} ({{}}); "
                                               f"download or export the folder again")
    classes = info.get("classes")
    return HubModel(model, tuple(map(str, classes)) if isinstance(classes, list) else None, _recipe(info, p), info)


def _recipe(info: dict[str, Any], path: Path) -> RunConfig | None:
    """The run's configuration, when this aelab reads it (a folder of another version may hold other options)."""
    recipe = info.get("recipe")
    if not isinstance(recipe, dict):
        return None
    try:
        return merge(RunConfig(), recipe, str(path / CONFIG_NAME)).validate()
    except AelabError:
        return None


# ------------------------------------------------------------------------------------------ the upload
def hub_api() -> Any:
    """``huggingface_hub.HfApi``, or ``ExportError`` naming the extra to install."""
    try:
        from huggingface_hub import HfApi  # lazy: an optional extra (aelab[hub])
    except ImportError:
        raise ExportError(NO_PACKAGE) from None
    return HfApi


def push(source: str | os.PathLike, repo_id: str, which: str = "best", private: bool | None = None,
         message: str | None = None, token: str | None = None) -> str:
    """Upload the run folder ``source`` (exported on the way, in a temporary folder) or a hub folder made by
    ``export_hub`` to the model repository ``repo_id`` (made when missing); returns the commit's address.
    Untested against the real Hub here (no route to it from this project's machines)."""
    api_class = hub_api()
    from huggingface_hub.utils import validate_repo_id  # lazy: an optional extra (aelab[hub])

    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise ExportError(f"{repo_id!r} is not a repository id ({one_line(err, 120)}); give USER/NAME") from None
    with tempfile.TemporaryDirectory(prefix="aelab-hub-") as tmp:
        folder = Path(source) if is_hub_folder(source) else export_hub(source, Path(tmp) / "hub", which,
                                                                         repo_id=repo_id).path
        api = api_class(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            done = api.upload_folder(repo_id=repo_id, folder_path=folder, ignore_patterns=[".*"],
                                     commit_message=message or f"aelab {__version__}: {folder.name}")
        except Exception as err:  # the network, the token, the server: one line, never a traceback
            raise ExportError(f"upload to {repo_id} failed ({one_line(err, 160)}); check the network, your token "
                              f"('hf auth login' or HF_TOKEN) and the repository id") from None
    return str(getattr(done, "commit_url", done))

