"""The checkpoint file format: tensors in safetensors, with a JSON description and a checksum in the header.

Every tensor file aelab writes (a run's checkpoints, its PCA baseline, its evaluation cache, an anomaly detector)
is one of these: ``save_checkpoint`` writes it atomically with the sha256 of its tensors (safetensors itself
checks nothing), ``load_checkpoint`` reads it back or names the fix in one line (``RunError``) when it is
missing, damaged or foreign, and ``check_finite`` refuses weights holding NaN or infinities. ``peek`` reads the
description alone, from the header, without reading or checking the tensors.

Torch is imported by the functions that handle tensors, not by the module: ``peek`` (and with it ``Run`` and
``aelab runs``, which reads only headers) runs without loading torch (~2 s of CPU at start-up).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from aelab.errors import RunError
from aelab.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

FORMAT = "aelab-run-1"
HEADER_LIMIT = 100_000_000  # the largest header safetensors itself reads (bytes)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (in name order): what a checkpoint's header keeps
    to notice flipped bytes, which safetensors itself does not check."""
    import torch  # lazy: peek and the run folder's names work without torch (module docstring)

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """A safetensors file: ``tensors`` plus ``meta`` (JSON-encoded in the header) and the tensors' sha256,
    written atomically."""
    from safetensors.torch import save as st_save  # lazy: imports torch (module docstring)

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta), "sha256": tensors_digest(tensors)}
    return atomic_write_bytes(path, st_save(tensors, metadata=header))


def _header(data: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file held in memory (8-byte length, then the JSON header)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint; ``RunError`` naming the fix when it is missing, damaged or foreign."""
    from safetensors.torch import load as st_load  # lazy: imports torch (module docstring)

    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; train the run first (aelab train)")
    damaged = (f"checkpoint {path} is corrupted ({{}}); delete it and train again, or resume the run from its "
               f"last checkpoint")
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        header = _header(data)
    except (SafetensorError, ValueError, OSError, RuntimeError, struct.error) as err:
        raise RunError(damaged.format(str(err).splitlines()[0][:80] if str(err) else type(err).__name__)) from None
    if header.get("format") != FORMAT:
        raise RunError(f"checkpoint {path} is not an {FORMAT} checkpoint (format {header.get('format')!r}); "
                       f"retrain it with this version of aelab")
    # Checkpoints written before the checksum was kept have none; their weights are still checked for NaN below.
    if "sha256" in header and tensors_digest(tensors) != header["sha256"]:
        raise RunError(damaged.format("its content does not match the checksum in its header"))
    try:
        meta = json.loads(header["meta"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise RunError(damaged.format("its description cannot be read")) from None
    if not isinstance(meta, dict):
        raise RunError(damaged.format("its description is not a mapping"))
    return tensors, meta


def peek(path: str | Path) -> dict[str, Any] | None:
    """The description (meta) of the aelab checkpoint at ``path``, read from its header alone, or None when
    ``path`` is not a readable aelab checkpoint. Cheap (the tensors are neither read nor checked), and it never
    raises: it answers "is this aelab's file?" and "where did training stop?"."""
    if not Path(path).is_file():  # not even opened: a FIFO of that name would block
        return None
    try:
        with Path(path).open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > HEADER_LIMIT:
                return None
            data = fh.read(length)
        header = json.loads(data)
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            return None
        meta = json.loads(metadata["meta"])
    except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or infinities (they would decode to garbage without any error)."""
    import torch  # lazy: module docstring

    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RunError(f"checkpoint {path} holds non-finite weights ({name}); resume from an earlier checkpoint "
                           f"or train again")
