"""Evaluation results read back from the run folder while their inputs are unchanged.

Evaluating a trained run again (``aelab evaluate``, the report, a comparison) repeats work whose inputs are
fixed: the kNN sample of training images through the same weights, and every PCA figure (PCA is fitted once
per run). Each result is kept in the run's evaluation cache (``Run.eval_cache``) under a key made of the sha256
of its inputs (weights, images, labels, seed), so new weights or changed data compute it again; a damaged or
foreign cache file is ignored and rewritten. This saves about a third of a repeated evaluation (benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from aelab.checkpoints import load_checkpoint, save_checkpoint, tensors_digest
from aelab.errors import OutputError, RunError


def digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes, in order."""
    return tensors_digest({f"{i:03d}": t for i, t in enumerate(tensors)})


def weights_digest(model: torch.nn.Module) -> str:
    return tensors_digest(dict(model.state_dict()))


class EvalCache:
    """Named entries of tensors plus JSON-able extras, each valid for one key; ``None`` path: no caching."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._tensors: dict[str, torch.Tensor] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        self._changed = False
        if self.path is not None and self.path.is_file():
            try:
                tensors, meta = load_checkpoint(self.path)
                entries = meta.get("entries", {})
            except (RunError, AttributeError):
                return  # damaged, foreign or an older layout: computed again and rewritten
            if isinstance(entries, dict):
                self._tensors, self._entries = tensors, entries

    def get(self, name: str, key: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any] | None:
        """(tensors, extra) stored under ``name`` for exactly ``key``, or None."""
        entry = self._entries.get(name)
        if self.path is None or not isinstance(entry, dict) or entry.get("key") != _canonical(key):
            return None
        try:
            tensors = {t: self._tensors[f"{name}/{t}"] for t in entry["tensors"]}
        except (KeyError, TypeError):
            return None
        return tensors, entry.get("extra")

    def put(self, name: str, key: dict[str, Any], tensors: dict[str, torch.Tensor], extra: Any = None) -> None:
        if self.path is None:
            return
        self._tensors = {k: v for k, v in self._tensors.items() if not k.startswith(f"{name}/")}
        self._tensors.update({f"{name}/{t}": v.detach().cpu().contiguous() for t, v in tensors.items()})
        self._entries[name] = {"key": _canonical(key), "tensors": sorted(tensors), "extra": extra}
        self._changed = True

    def save(self) -> None:
        """Write the entries put since loading (atomically); a folder that cannot be written keeps no cache."""
        if self.path is None or not self._changed:
            return
        try:
            save_checkpoint(self.path, self._tensors, {"entries": self._entries})
        except (OutputError, OSError):
            return  # a read-only run folder: evaluation still works, it just is not sped up next time
        self._changed = False


def _canonical(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
