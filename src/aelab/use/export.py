"""Ship a trained model: its encoder and decoder as ONNX or TorchScript files.

``export_run(RUN, "onnx")`` writes ``RUN/export/encoder.onnx`` and ``decoder.onnx`` (or ``.pt`` files for
TorchScript) and ``export.json`` describing them:

- encoder: input ``images`` float32 (batch, 1, 28, 28), pixels in [0, 1] -> output ``codes`` (batch, latent);
- decoder: input ``codes`` float32 (batch, latent) -> output ``images`` (batch, 1, 28, 28) in [0, 1]
  (a model of other images: their (C, H, W) instead of (1, 28, 28); export.json says which)
  (the sigmoid is part of the exported decoder).

For a VAE the encoder is the mean encoder (``model.encoder`` ends in the mean head; the log-variance head is
not exported) and the decoder is its generator: feed it prior samples N(0, I) to generate images.

The batch axis is dynamic. ONNX uses PyTorch's ``torch.export``-based exporter (``dynamo=True``, needs
onnxscript; works offline), one self-contained file per model. When onnxruntime is installed the export
checks that ONNX Runtime's output matches PyTorch's and reports the largest difference.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aelab.errors import ExportError
from aelab.files import make_folder, move_into_place, temp_beside
from aelab.models import VAE, Autoencoder
from aelab.runs import Run

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class Encoder(nn.Module):
    def __init__(self, model: Autoencoder):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)


class Decoder(nn.Module):
    """The decoder with its sigmoid: codes -> pixels in [0, 1]."""

    def __init__(self, model: Autoencoder):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(codes))


@dataclass
class Exported:
    encoder: Path
    decoder: Path
    info: Path
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # part -> |runtime - PyTorch|, when checked


def parts(model: Autoencoder) -> tuple[Encoder, Decoder]:
    """CPU, eval-mode copies of the encoder and the decoder (with sigmoid)."""
    m = copy.deepcopy(model).cpu().eval()
    return Encoder(m).eval(), Decoder(m).eval()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's progress lines and its notes about torchvision (not used here)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _onnx(module: nn.Module, example: torch.Tensor, path: Path, in_name: str, out_name: str) -> None:
    try:
        import onnxscript  # noqa: F401 - the exporter needs it
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxscript: pip install 'aelab[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with _quiet_exporter():
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                              input_names=[in_name], output_names=[out_name],
                              dynamic_shapes=({0: batch},), report=False)
        except Exception as err:  # noqa: BLE001 - the exporter raises many types; one line for the user
            raise ExportError(f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
                              ) from None


def _torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still supported
        more = torch.cat([example, example, example])
        traced = torch.jit.trace(module, (example,), check_inputs=[(example[:1],), (more,)])
        traced.save(str(path))


def _check(fmt: str, path: Path, module: nn.Module, example: torch.Tensor) -> float | None:
    """Largest |runtime - PyTorch| on ``example``; None when onnxruntime is not installed."""
    with torch.inference_mode():
        want = module(example).numpy()
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = torch.jit.load(str(path))(example).detach().numpy()
    else:
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: example.numpy()})[0]
    return float(abs(got - want).max())


def export_model(model: Autoencoder, out_dir: str | os.PathLike, fmt: str = "onnx", check: bool = True,
                 source: str | None = None) -> Exported:
    """Write the encoder and decoder of ``model`` into ``out_dir`` as ``fmt`` (onnx or torchscript)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose onnx or torchscript")
    out = Path(out_dir)
    make_folder(out)  # links followed; a file, a dangling link or a read-only place: one line
    enc, dec = parts(model)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, *model.image_shape, generator=g)
    dims = ", ".join(str(v) for v in model.image_shape)
    with torch.inference_mode():
        codes = enc(images)
    codes = codes.clone()
    suffix = SUFFIX[fmt]
    final = {"encoder": out / f"encoder{suffix}", "decoder": out / f"decoder{suffix}"}
    temps: dict[str, Path] = {}
    diffs: dict[str, float] = {}
    try:
        for name, module, example, io_names in (("encoder", enc, images, ("images", "codes")),
                                                ("decoder", dec, codes, ("codes", "images"))):
            temps[name] = temp_beside(final[name], suffix)
            if fmt == "onnx":
                _onnx(module, example, temps[name], *io_names)
            else:
                _torchscript(module, example, temps[name])
            if check:
                d = _check(fmt, temps[name], module, example)
                if d is not None:
                    diffs[name] = d
        info = {
            "format": fmt, "source": source, "model": model.hparams, "latent": model.latent,
            "encoder": {"file": final["encoder"].name, "input": f"images float32 (batch, {dims}) in [0, 1]",
                        "output": f"codes float32 (batch, {model.latent})"
                                  + (" (the posterior mean of a VAE)" if isinstance(model, VAE) else "")},
            "decoder": {"file": final["decoder"].name, "input": f"codes float32 (batch, {model.latent})",
                        "output": f"images float32 (batch, {dims}) in [0, 1] (sigmoid included)"},
            "torch": torch.__version__, "checked_max_abs_diff": diffs or None,
        }
        final["info"] = out / "export.json"
        temps["info"] = temp_beside(final["info"])
        temps["info"].write_text(json.dumps(info, indent=2) + "\n")
        for key, tmp_path in temps.items():
            move_into_place(tmp_path, final[key])
        temps = {}
    finally:
        for tmp_path in temps.values():
            tmp_path.unlink(missing_ok=True)
    return Exported(final["encoder"], final["decoder"], final["info"], diffs)


def export_run(run: str | os.PathLike, fmt: str = "onnx", out_dir: str | os.PathLike | None = None,
               which: str = "best", check: bool = True) -> Exported:
    """Export the model of the run folder ``run``; ``out_dir`` defaults to ``RUN/export``."""
    r = Run.open(run)
    model = r.load_model(which)
    return export_model(model, out_dir or r.exports, fmt, check=check, source=str(run))
