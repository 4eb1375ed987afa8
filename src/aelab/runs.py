"""The run folder: its paths, checkpoints in safetensors, and loading a trained model back.

A run folder holds ``config.yaml`` (the resolved configuration), ``best.safetensors`` and
``last.safetensors`` (checkpoints), ``history.csv``, ``metrics.json``, ``pca.safetensors`` (the fitted PCA
baseline), ``figures/`` and ``report.html``. Everything a person sees can be rebuilt from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from aelab.config import RunConfig, merge
from aelab.errors import AelabError, RunError
from aelab.files import atomic_write_bytes
from aelab.models import Autoencoder, PCAModel, build_model

FORMAT = "aelab-run-1"


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """A safetensors file: ``tensors`` plus ``meta`` (JSON-encoded in the header), written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta)}
    return atomic_write_bytes(path, st_save(tensors, metadata=header))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; train the run first (aelab train)")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        raise RunError(f"checkpoint {path} is corrupted ({str(err).splitlines()[0][:80]}); delete it and train "
                       f"again, or resume from last.safetensors") from None
    if header.get("format") != FORMAT:
        raise RunError(f"checkpoint {path} is not an {FORMAT} checkpoint (format {header.get('format')!r}); "
                       f"retrain it with this version of aelab")
    return tensors, json.loads(header["meta"])


def model_from_checkpoint(path: str | Path, expect: dict[str, Any] | None = None) -> Autoencoder:
    """Rebuild the model stored in a checkpoint; ``expect`` (hparams) must match when given."""
    tensors, meta = load_checkpoint(path)
    hp = meta.get("hparams")
    if not isinstance(hp, dict) or "model" not in hp:
        raise RunError(f"checkpoint {path} has no model description; retrain it with this version of aelab")
    if expect is not None:
        diff = {k: (hp.get(k), v) for k, v in expect.items() if hp.get(k) != v}
        if diff:
            k, (got, want) = next(iter(diff.items()))
            raise RunError(f"checkpoint {path} is from another architecture ({k}={got!r}, the run wants "
                           f"{want!r}); use a checkpoint of this run or start a new run with --out")
    hp = dict(hp)
    model = build_model(hp.pop("model"), hp.pop("latent"), **hp)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise RunError(f"checkpoint {path} does not fit its own architecture ({str(err).splitlines()[0][:80]}); "
                       f"it is damaged: train again") from None
    model.eval()
    return model


# ------------------------------------------------------------------------------------------ the run folder
@dataclass
class Run:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def best(self) -> Path:
        return self.path / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.path / "last.safetensors"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def pca(self) -> Path:
        return self.path / "pca.safetensors"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run folder; raises ``RunError`` when it is missing or has no config."""
        p = Path(path)
        if not p.is_dir():
            raise RunError(f"run folder {p} does not exist; give the folder 'aelab train' printed")
        run = cls(p)
        if not run.config_file.is_file():
            raise RunError(f"{p} is not an aelab run (no config.yaml); give the folder 'aelab train' printed")
        return run

    def config(self) -> RunConfig:
        try:
            data = yaml.safe_load(self.config_file.read_text()) or {}
        except yaml.YAMLError:
            raise RunError(f"{self.config_file} cannot be parsed; restore it or train a new run") from None
        try:
            return merge(RunConfig(), data, str(self.config_file)).validate()
        except AelabError as err:
            raise RunError(f"{self.config_file} is from another version of aelab ({err})") from None

    def load_model(self, which: str = "best") -> Autoencoder:
        path = self.best if which == "best" else self.last
        if not path.is_file() and which == "best" and self.last.is_file():
            path = self.last
        if not path.is_file():
            raise RunError(f"{self.path} has no checkpoint ({path.name}); train it first or resume it with "
                           f"'aelab train --resume {self.path}'")
        cfg = self.config()
        expect = {"model": cfg.model, "latent": cfg.latent}
        return model_from_checkpoint(path, expect)

    def load_metrics(self) -> dict[str, Any]:
        if not self.metrics.is_file():
            raise RunError(f"{self.path} has no metrics.json; run 'aelab evaluate {self.path}' first")
        try:
            return json.loads(self.metrics.read_text())
        except json.JSONDecodeError:
            raise RunError(f"{self.metrics} is damaged; rebuild it with 'aelab evaluate {self.path}'") from None

    def save_pca(self, pca: PCAModel) -> None:
        save_checkpoint(self.pca, pca.state(), {"latent": pca.latent})

    def load_pca(self) -> PCAModel | None:
        if not self.pca.is_file():
            return None
        tensors, _ = load_checkpoint(self.pca)
        return PCAModel.from_state(tensors)
