"""Use a trained model from Python: ``aelab.load(RUN)`` -> ``TrainedModel`` with encode / decode / reconstruct.

Images may be numpy arrays or torch tensors of shape (n, 28, 28), (n, 1, 28, 28) or (n, 784), uint8 in
0..255 (any integer type) or float in [0, 1]; a numpy memory map works too and is read a batch at a time.
A model trained on other images takes their shape (``model.image_shape``, (C, H, W)): (n, H, W) grey,
(n, C, H, W), (n, H, W, C) colour or (n, C*H*W); ``decode`` gives (n, H, W) grey or (n, C, H, W) colour.
Results are numpy arrays unless ``as_tensor=True``.

Example (with a run folder at ``runs/quick``; ``aelab train --train-limit 2000 --epochs 1 --out runs/quick``
makes one in a minute)::

    >>> import aelab
    >>> from aelab.data import load_dataset
    >>> model = aelab.load("runs/quick")
    >>> x = load_dataset("fashion-mnist", test_limit=100).test.images.numpy()   # uint8 (100, 28, 28)
    >>> codes = model.encode(x)                               # numpy float32 (100, latent)
    >>> codes.shape == (100, model.latent)
    True
    >>> model.decode(codes).shape                             # pixels in [0, 1]
    (100, 28, 28)
    >>> model.reconstruct(x.reshape(100, 784) / 255.0).shape  # same layout as the input
    (100, 784)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aelab.data import DATASETS, check_batch_shape, to_pixels
from aelab.data.pixels import batch_layout
from aelab.device import select_device
from aelab.errors import InputError, RunError
from aelab.evaluation.detector import Detector
from aelab.evaluation.passes import BatchedInference
from aelab.models import VAE, Autoencoder, build_model, prior_codes
from aelab.runs import Run
from aelab.use.hub import is_hub_folder, read_hub
from aelab.use.outliers import OutlierMixin

DEFAULT_BATCH = 1024


def check_codes(codes: Any, latent: int, what: str = "codes", first_index: int = 0) -> torch.Tensor:
    """Codes (n, latent) as numpy or torch -> float32 tensor; wrong width, NaN or infinities raise InputError."""
    if isinstance(codes, torch.Tensor):
        t = codes
    else:
        arr = np.asarray(codes)
        if arr.dtype.kind not in "uif":
            raise InputError(f"{what} are of type {arr.dtype}; give real numbers")
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # one batch: a small copy
    if t.ndim != 2:
        raise InputError(f"{what} have shape {tuple(t.shape)}, expected (n, {latent})")
    if t.shape[1] != latent:
        raise InputError(f"{what} have width {t.shape[1]}, but the model's latent size is {latent}")
    if t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"{what} are of type {t.dtype}; give real numbers")
    t = t.to(torch.float32)
    finite = torch.isfinite(t).all(1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise InputError(f"{what}: row {first_index + bad} holds NaN or infinite values; fix or drop it")
    return t


class TrainedModel(OutlierMixin):
    """A trained autoencoder ready for use: ``encode``, ``decode``, ``reconstruct`` on arrays of images.

    Get one with ``aelab.load(RUN)``; or wrap a model in memory with ``TrainedModel(model)``.
    It pickles with its weights inside.

    Example::

        >>> import numpy as np
        >>> from aelab.models import build_model
        >>> m = TrainedModel(build_model("dense", 8, width=0.1))   # an untrained model, for the shapes
        >>> m.encode(np.zeros((3, 28, 28), dtype=np.uint8)).shape
        (3, 8)
        >>> m.decode(np.zeros((3, 8))).shape
        (3, 28, 28)
        >>> m.reconstruct(np.zeros((3, 784), dtype=np.float32)).shape
        (3, 784)
    """

    run: Run | None = None  # the run folder it was loaded from (aelab.load; Run names its files), else None

    def __init__(self, model: Autoencoder, *, classes: tuple[str, ...] | None = None, source: str | None = None,
                 device: str | torch.device | None = None, batch_size: int = DEFAULT_BATCH,
                 config: Any = None, detector: Detector | None = None):
        self.model = model.eval()
        self.config = config  # the run's RunConfig when loaded from a run folder (data set, split, seed), else None
        self.detector = detector  # the anomaly detector (use.outliers: score_samples, predict), when there is one
        if device is not None:
            self.model.to(device)
        self._fast_key: tuple = ()
        self.classes = classes
        self.source = source
        self.batch_size = batch_size

    # ---------------------------------------------------------------------------------------- facts
    @property
    def latent(self) -> int:
        return self.model.latent

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.model.hparams)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes: (1, 28, 28) for the built-in data sets."""
        return self.model.image_shape

    @property
    def _out_shape(self) -> tuple[int, ...]:
        c, h, w = self.image_shape
        return (h, w) if c == 1 else (c, h, w)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_vae(self) -> bool:
        """Whether the model is a variational autoencoder: ``encode`` gives its posterior mean, ``sample`` works."""
        return isinstance(self.model, VAE)

    def require_vae(self, what: str = "this model") -> None:
        """``RunError`` naming the fix unless the model is a VAE (only a VAE has a prior to sample from)."""
        if not self.is_vae:
            raise RunError(f"{what} is a plain autoencoder ({self.model.hparams.get('model')}), which has no prior to "
                           f"sample from; train a VAE (aelab train --model vae) and sample that")

    def sample(self, n: int, seed: int = 0, as_tensor: bool = False) -> np.ndarray | torch.Tensor:
        """``n`` images (n, H, W) (grey) or (n, C, H, W) in [0, 1] generated by a VAE: codes drawn from its prior
        N(0, I) (seeded; ``models.prior_codes``), decoded to the decoder's mean image (no pixel noise)."""
        self.require_vae()
        return self.decode(prior_codes(n, self.latent, seed), as_tensor=as_tensor)

    def __repr__(self) -> str:
        hp = self.model.hparams
        where = f", source={self.source!r}" if self.source else ""
        return f"TrainedModel(model={hp.get('model')!r}, latent={self.latent}{where})"

    @property
    def _inference(self) -> BatchedInference:
        """What encode/decode run: ``evaluation.passes.BatchedInference`` of ``model`` (its inference copy, batch norm
        folded, channels-last), made again whenever the weights of ``model`` change or it moves to another device."""
        key = tuple((t.device, t.data_ptr(), t._version) for t in (*self.model.parameters(), *self.model.buffers()))
        if key != self._fast_key:
            self._runner, self._fast_key = BatchedInference(self.model), key
        return self._runner

    # ---------------------------------------------------------------------------------------- streaming
    def iter_encode(self, images: Any, batch_size: int | None = None, progress: bool = False
                    ) -> Iterator[torch.Tensor]:
        """Codes of ``images`` batch by batch (float32 tensors on the CPU); reads one batch at a time."""
        for start, stop in self._ranges(len(images), batch_size, progress, "encode"):
            x = to_pixels(images[start:stop], first_index=start, shape=self.image_shape)
            yield self.encode_batch(x)

    def iter_decode(self, codes: Any, batch_size: int | None = None, progress: bool = False
                    ) -> Iterator[torch.Tensor]:
        """Pixels (b, C, H, W) in [0, 1] of ``codes`` batch by batch."""
        for start, stop in self._ranges(len(codes), batch_size, progress, "decode"):
            z = check_codes(codes[start:stop], self.latent, first_index=start)
            yield self.decode_batch(z)

    def _ranges(self, n: int, batch_size: int | None, progress: bool, desc: str) -> Iterator[tuple[int, int]]:
        b = batch_size or self.batch_size
        starts = range(0, n, b)
        for start in tqdm(starts, desc=desc, unit="batch", disable=None if progress else True, leave=False):
            yield start, min(start + b, n)

    def encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of one checked batch: float32 pixels (b, C, H, W) in [0, 1] -> (b, latent) on the CPU."""
        out = self._inference.map(x, lambda m, b: m.encode(b).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.latent)

    def decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels (b, C, H, W) in [0, 1] of one checked batch of codes (b, latent), on the CPU."""
        out = self._inference.map(z, lambda m, b: torch.sigmoid(m.decode(b)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    # ---------------------------------------------------------------------------------------- whole arrays
    def encode(self, images: Any, batch_size: int | None = None, as_tensor: bool = False,
               progress: bool = False) -> np.ndarray | torch.Tensor:
        """Latent codes (n, latent) float32 of ``images`` ((n, 28, 28), (n, 1, 28, 28) or (n, 784); other shapes
        for a model of other images: see the module docstring); for a VAE, the posterior mean."""
        _check_images(images, self.image_shape)
        out = _collect(self.iter_encode(images, batch_size, progress), (len(images), self.latent))
        return out if as_tensor else out.numpy()

    def decode(self, codes: Any, batch_size: int | None = None, as_tensor: bool = False,
               progress: bool = False) -> np.ndarray | torch.Tensor:
        """Images (n, 28, 28) float32 in [0, 1] from codes (n, latent) ((n, H, W) or (n, C, H, W) for a model of
        other images)."""
        if not hasattr(codes, "shape"):
            codes = np.asarray(codes, dtype=np.float32)
        check_codes(codes[:0], self.latent)
        out = _collect(self.iter_decode(codes, batch_size, progress), (len(codes), *self._out_shape))
        return out if as_tensor else out.numpy()

    def reconstruct(self, images: Any, batch_size: int | None = None, as_tensor: bool = False,
                    progress: bool = False) -> np.ndarray | torch.Tensor:
        """Reconstructions in [0, 1], float32, in the layout of ``images`` ((n, 28, 28), (n, 1, 28, 28), (n, 784))."""
        _check_images(images, self.image_shape)
        shape = tuple(images.shape)
        nhwc = batch_layout(shape, self.image_shape) == "nhwc"

        def batches() -> Iterator[torch.Tensor]:
            for start, stop in self._ranges(len(images), batch_size, progress, "reconstruct"):
                x = to_pixels(images[start:stop], first_index=start, shape=self.image_shape)
                out = self.decode_batch(self.encode_batch(x))
                yield out.permute(0, 2, 3, 1) if nhwc else out

        inner = (*self.image_shape[1:], self.image_shape[0]) if nhwc else self.image_shape
        out = _collect(batches(), (len(images), *inner)).reshape(shape)
        return out if as_tensor else out.numpy()

    # ---------------------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        from safetensors.torch import save

        weights = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        return {"hparams": self.model.hparams, "weights": save(weights), "classes": self.classes,
                "source": self.source, "batch_size": self.batch_size, "detector": self.detector}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from safetensors.torch import load

        hp = dict(state["hparams"])
        model = build_model(hp.pop("model"), hp.pop("latent"), **hp)
        model.load_state_dict(load(state["weights"]))
        self.__init__(model, classes=state["classes"], source=state["source"],  # type: ignore[misc]
                      batch_size=state["batch_size"], detector=state.get("detector"))


def _check_images(images: Any, shape: tuple[int, int, int]) -> None:
    if not hasattr(images, "shape") or not hasattr(images, "__getitem__"):
        raise InputError(f"images must be a numpy array or a torch tensor, not {type(images).__name__}")
    check_batch_shape(tuple(images.shape), image=shape)


def _collect(batches: Iterator[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Fill one preallocated tensor of ``shape`` batch by batch (no second copy of the whole result)."""
    out = torch.empty(shape)
    at = 0
    for part in batches:
        out[at:at + len(part)] = part.reshape(len(part), *shape[1:])
        at += len(part)
    return out


def load(run: str | os.PathLike, which: str = "best", device: str | None = "cpu",
         batch_size: int = DEFAULT_BATCH) -> TrainedModel:
    """The trained model of the run folder ``run`` (``which``: "best" or "last" checkpoint), or of a folder in the
    Hugging Face Hub's format (``aelab export RUN --format hub``, or a download of one; it holds one checkpoint,
    so ``which`` does not apply).

    ``device``: "cpu" (default), "cuda", "mps" or "auto" (the fastest there is).

    Example::

        >>> import aelab
        >>> model = aelab.load("runs/quick")
        >>> model.source, model.device.type
        ('runs/quick', 'cpu')
    """
    if which not in ("best", "last"):
        raise InputError(f"unknown checkpoint {which!r}; use 'best' or 'last'")
    if is_hub_folder(run):
        hub = read_hub(run)
        return TrainedModel(hub.model, classes=hub.classes, source=str(run), device=select_device(device or "cpu"),
                            batch_size=batch_size, config=hub.config)
    r = Run.open(run)
    cfg = r.config()
    model = r.load_model(which)
    dev = select_device(device or "cpu")
    record = r.load_data() or {}
    classes = DATASETS[cfg.dataset].classes if cfg.dataset in DATASETS else \
        tuple(record["classes"]) if isinstance(record.get("classes"), list) else None
    trained = TrainedModel(model, classes=classes, source=str(run), device=dev, batch_size=batch_size, config=cfg,
                           detector=Detector.load(r))
    trained.run = r
    return trained

