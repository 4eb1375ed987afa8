"""The run folder: its paths, checkpoints in safetensors, and loading a trained model back.

A run folder holds ``config.yaml`` (the resolved configuration), ``data.json`` (the data it was trained on:
source, image shape, fingerprints), ``best.safetensors`` and ``last.safetensors`` (checkpoints),
``history.csv``, ``metrics.json``, ``pca.safetensors`` (the fitted PCA baseline), ``eval-cache.safetensors``
(results a repeated evaluation reads back), ``figures/`` and ``report.html``. Everything a person sees can be
rebuilt from it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from aelab.config import RunConfig, merge
from aelab.errors import AelabError, RunError
from aelab.files import LOCK_NAME, atomic_write_bytes, folder_lock, write_json
from aelab.models import Autoencoder, PCAModel, build_model

FORMAT = "aelab-run-1"


# ------------------------------------------------------------------------------------------ checkpoints
def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (in name order): what a checkpoint's header keeps
    to notice flipped bytes, which safetensors itself does not check."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """A safetensors file: ``tensors`` plus ``meta`` (JSON-encoded in the header) and the tensors' sha256,
    written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta), "sha256": tensors_digest(tensors)}
    return atomic_write_bytes(path, st_save(tensors, metadata=header))


def _header(data: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file held in memory (8-byte length, then the JSON header)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]).get("__metadata__") or {}


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint; ``RunError`` naming the fix when it is missing, damaged or foreign."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; train the run first (aelab train)")
    damaged = (f"checkpoint {path} is corrupted ({{}}); delete it and train again, or resume from "
               f"last.safetensors")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header = _header(data)
    except (SafetensorError, ValueError, OSError, RuntimeError, struct.error, UnicodeDecodeError) as err:
        raise RunError(damaged.format(str(err).splitlines()[0][:80] if str(err) else type(err).__name__)) from None
    if header.get("format") != FORMAT:
        raise RunError(f"checkpoint {path} is not an {FORMAT} checkpoint (format {header.get('format')!r}); "
                       f"retrain it with this version of aelab")
    # Checkpoints written before the checksum was kept have none; their weights are still checked for NaN below.
    if "sha256" in header and tensors_digest(tensors) != header["sha256"]:
        raise RunError(damaged.format("its content does not match the checksum in its header"))
    try:
        return tensors, json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise RunError(damaged.format("its description cannot be read")) from None


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or infinities (they would decode to garbage without any error)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RunError(f"checkpoint {path} holds non-finite weights ({name}); resume from an earlier checkpoint "
                           f"or train again")


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
    check_finite(weights, path)
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

    def writing(self) -> AbstractContextManager[None]:
        """The run folder's exclusive write lock (``files.folder_lock``): every writer of a run holds it."""
        return folder_lock(self.path)

    def entries(self) -> list[str]:
        """What the folder holds, less the lock file (empty for a new folder)."""
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME) if self.path.is_dir() else []

    def epochs_done(self) -> int:
        """Completed epochs according to history.csv (0 when there is none)."""
        if not self.history.is_file():
            return 0
        return max(0, len([line for line in self.history.read_text().splitlines() if line.strip()]) - 1)

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
        if not isinstance(data, dict):
            raise RunError(f"{self.config_file} does not hold a mapping of option: value; restore it or train a new "
                           f"run")
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
        save_checkpoint(self.pca, pca.state(), {"latent": pca.latent, "shape": list(pca.shape)})

    def load_pca(self) -> PCAModel | None:
        if not self.pca.is_file():
            return None
        tensors, meta = load_checkpoint(self.pca)
        return PCAModel.from_state(tensors, tuple(meta.get("shape") or (1, 28, 28)))

    @property
    def data_record(self) -> Path:
        return self.path / "data.json"

    def save_data(self, record: dict[str, Any]) -> None:
        """Keep what the run was trained on (``DataBundle.record``: source, shape, fingerprints) in data.json."""
        write_json(self.data_record, record)

    def load_data(self) -> dict[str, Any] | None:
        """The run's data.json, or None (runs made before it existed, or a damaged file)."""
        try:
            record = json.loads(self.data_record.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None
