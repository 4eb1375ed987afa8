"""The jobs behind ``aelab encode``, ``aelab decode`` and ``aelab reconstruct``: files in, files out.

Inputs are read a batch at a time (``aelab.data.sources``), in the shape the run's model takes, so a
memory-mapped .npy of any length is never loaded whole; ``data:train``, ``data:val`` and ``data:test`` name the
run's own splits of its data set (whatever its source: a built-in set or the user's own images). Outputs are
written to temporary files or a temporary folder and renamed into place at the end, so an error half-way leaves
nothing behind.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from aelab.data import ImageSource, display, image_bytes, load_dataset, open_input, to_pixels, to_uint8
from aelab.data.pixels import side_by_side
from aelab.errors import InputError, OutputError
from aelab.evaluation.metrics import ssim_per_image
from aelab.files import StagedDir, check_apart
from aelab.use.api import TrainedModel, check_codes, load
from aelab.use.codes import CodeWriter, Meta, read_codes

SEPARATOR = 128  # grey column between original and reconstruction


@dataclass
class Result:
    n: int
    paths: list[Path]
    mean_ssim: float | None = None


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    """A progress bar on stderr; shown only when stderr is a terminal (``disable=None``) and ``progress``."""
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, disable=None if progress else True,
                leave=False)


def _limit(n: int, limit: int | None) -> int:
    if limit is not None and limit < 1:
        raise OutputError(f"--limit {limit}: give a positive number of images")
    return n if limit is None else min(n, limit)


# ------------------------------------------------------------------------------------------ inputs
RUN_SPLITS = ("train", "val", "test")


def open_source(model: TrainedModel, source: str | os.PathLike | ImageSource, resize: bool = False,
                data_dir: str | None = None) -> ImageSource:
    """What ``source`` names, read in the shape ``model`` takes: an ``ImageSource`` as it is, ``data:SPLIT`` (the
    run's own split of its data set), or a file, folder or built-in split (``data.open_input``)."""
    if isinstance(source, ImageSource):
        return source
    kind, sep, split = str(source).partition(":")
    if kind != "data" or not sep or Path(str(source)).exists():
        mode = model.config.resize if resize and model.config is not None else resize  # as the run was trained
        return open_input(source, resize=mode, data_dir=data_dir, shape=model.image_shape)
    if split not in RUN_SPLITS:
        raise InputError(f"{source}: unknown split {split!r}; use data:train, data:val or data:test")
    if model.config is None:
        raise InputError(f"{source}: names a run's own data, but this model was not loaded from a run folder")
    cfg = model.config
    bundle = load_dataset(cfg.dataset, **dict(cfg.data_kwargs(), data_dir=data_dir or cfg.data_dir))
    part = getattr(bundle, split)
    images = part.images.numpy()
    return ImageSource(label=f"{cfg.dataset_name}:{split}", n=len(part), read=lambda a, b: images[a:b],
                       labels=part.labels.numpy(), classes=bundle.classes)


# ------------------------------------------------------------------------------------------ encode
def encode_to_file(run: str | os.PathLike | TrainedModel, source: str | os.PathLike | ImageSource,
                   out: str | os.PathLike, *, resize: bool = False, batch_size: int = 1024,
                   limit: int | None = None, progress: bool = True, data_dir: str | None = None) -> Result:
    """Encode every image of ``source`` with the model of ``run`` into the code file ``out``."""
    check_apart(out, (source,))
    model = run if isinstance(run, TrainedModel) else load(run)
    src = open_source(model, source, resize, data_dir)
    n = _limit(src.n, limit)
    meta = Meta(names=src.names[:n] if src.names else None,
                labels=src.labels[:n] if src.labels is not None else None, classes=src.classes)
    with CodeWriter(out, n, model.latent, meta) as writer, _bar(n, "encode", progress) as bar:
        for start, images in src.batches(batch_size, n):
            x = to_pixels(images, src.label, start, model.image_shape)
            writer.write(start, model.encode_batch(x).numpy())
            bar.update(len(images))
        paths = writer.commit()
    return Result(n, paths)


def _stem(name: str | None) -> str:
    if not name:
        return ""
    stem = Path(name).with_suffix("").as_posix()
    return "_" + re.sub(r"[^A-Za-z0-9.+-]+", "_", stem).strip("_")[:80]


# ------------------------------------------------------------------------------------------ decode
def decode_to_pngs(run: str | os.PathLike | TrainedModel, codes: str | os.PathLike, out_dir: str | os.PathLike,
                   *, batch_size: int = 1024, limit: int | None = None, progress: bool = True,
                   force: bool = False, scale: int = 1) -> Result:
    """Decode each row of the code file ``codes`` into ``out_dir/<index>[_<name>].png``."""
    stage = StagedDir(out_dir, force, inputs=(codes,))  # refuses a bad -o before the work
    model = run if isinstance(run, TrainedModel) else load(run)
    table = read_codes(codes)
    n = _limit(len(table.codes), limit)
    if n == 0:
        raise OutputError(f"{table.label}: holds no codes")
    check_codes(table.codes[:0], model.latent, table.label)
    width = max(5, len(str(n - 1)))
    with stage, _bar(n, "decode", progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            z = check_codes(table.codes[start:stop], model.latent, table.label, start)
            pixels = display(to_uint8(model.decode_batch(z)))
            for i, img in enumerate(pixels, start=start):
                name = table.meta.names[i] if table.meta.names else None
                stage.write(f"{i:0{width}d}{_stem(name)}.png", image_bytes(img, scale))
            bar.update(stop - start)
        path = stage.commit()
    return Result(n, [path])


# ------------------------------------------------------------------------------------------ reconstruct
def reconstruct_to_pngs(run: str | os.PathLike | TrainedModel, source: str | os.PathLike | ImageSource,
                        out_dir: str | os.PathLike, *, resize: bool = False, batch_size: int = 1024,
                        limit: int | None = None, progress: bool = True, data_dir: str | None = None,
                        force: bool = False, scale: int = 1) -> Result:
    """Write ``original | reconstruction`` PNGs with their SSIM in the name, and ``index.csv``.

    SSIM is the headline definition (11x11 Gaussian window, DESIGN.md), of the float reconstruction against
    the input pixels; the PNG holds both rounded to 8 bits.
    """
    stage = StagedDir(out_dir, force, inputs=(source,))  # refuses a bad -o before the work
    model = run if isinstance(run, TrainedModel) else load(run)
    src = open_source(model, source, resize, data_dir)
    n = _limit(src.n, limit)
    width = max(5, len(str(n - 1)))
    buf = io.StringIO()
    index = csv.writer(buf)
    index.writerow(["index", "file", "ssim", *(["name"] if src.names else []),
                    *(["label"] if src.labels is not None else []),
                    *(["class"] if src.labels is not None and src.classes else [])])
    total = 0.0
    with stage, _bar(n, "reconstruct", progress) as bar:
        for start, images in src.batches(batch_size, n):
            x = to_pixels(images, src.label, start, model.image_shape)
            recon = model.decode_batch(model.encode_batch(x))
            ssim = ssim_per_image(recon.double(), x.double()).numpy()
            total += float(ssim.sum())
            pairs = side_by_side([x, recon], SEPARATOR)
            for j, img in enumerate(pairs):
                i = start + j
                name = src.names[i] if src.names else None
                file = f"{i:0{width}d}{_stem(name)}_ssim{ssim[j]:.4f}.png"
                stage.write(file, image_bytes(img, scale))
                row = [i, file, f"{ssim[j]:.6f}", *([name] if src.names else [])]
                if src.labels is not None:
                    row.append(int(src.labels[i]))
                    if src.classes:
                        row.append(src.class_name(i))
                index.writerow(row)
            bar.update(len(images))
        stage.write("index.csv", buf.getvalue().encode("utf-8"))
        path = stage.commit()
    return Result(n, [path, path / "index.csv"], mean_ssim=total / n)
