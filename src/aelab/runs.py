"""The run folder (``Run``): the name of every file in it, what makes a folder a run, and the model back.

A run folder holds, each named by ``Run`` and by no other module:

- ``.aelab-run``: aelab's mark, written by a new run before its first file: only a folder holding it (or a run of
  an earlier version: ``config.yaml`` beside a checkpoint of aelab's format) is taken for a run, and only the
  files named here are ever deleted from it (``Run.clear``, when a run that never finished an epoch restarts);
- ``config.yaml`` (the resolved configuration), ``data.json`` (the data it was trained on: source, image shape,
  fingerprints), ``best.safetensors`` and ``last.safetensors`` (checkpoints, ``aelab.checkpoints``),
  ``history.csv``;
- ``metrics.json``, ``pca.safetensors`` (the fitted PCA baseline), ``eval-cache.safetensors`` (results a
  repeated evaluation reads back), ``figures/`` and ``report.html``;
- after ``aelab anomaly``: ``detector.safetensors`` and ``anomaly.json``; after ``aelab explore``: ``explorer/``
  (the 2-D maps, ``projection-<method>.npz``); and the lock, ``.aelab.lock`` (``files.folder_lock``);
- ``facts.json`` (what the latest training session ran with: parameters, precision and why, threads, machine,
  trackers); with ``--track``: ``tracking.json`` (the MLflow run this run logs to) and TensorBoard's event files
  (``events.out.tfevents.*``, in the run folder itself, so ``tensorboard --logdir runs`` shows every run).

Everything a person sees can be rebuilt from it. The module imports no torch (the models are imported by the two
functions that build one), so that reading a run's names and small records (``aelab runs``) stays light.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aelab.checkpoints import check_finite, load_checkpoint, peek, save_checkpoint
from aelab.config import RunConfig, merge, read_config_file
from aelab.errors import AelabError, OutputError, RunError
from aelab.files import LOCK_NAME, folder_lock, write_json

if TYPE_CHECKING:
    from aelab.models import Autoencoder, PCAModel

MARK_FORMAT = "aelab-run-folder-1"
RECORD_TYPES: dict[str, tuple[type, type | None]] = {  # data.json: key -> (its type, the type of its items)
    "dataset": (str, None), "source": (str, None), "shape": (list, int), "classes": (list, str),
    "images": (dict, int), "fingerprint": (dict, str), "notes": (list, str)}


# ------------------------------------------------------------------------------------------ the model
def model_from_checkpoint(path: str | Path, expect: dict[str, Any] | None = None) -> Autoencoder:
    """Rebuild the model stored in a checkpoint; ``expect`` (hparams) must match when given."""
    from aelab.models import build_model  # lazy: Run's names and records work without torch (aelab runs)

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
    return load_weights(model, weights, path, f"checkpoint {path} does not fit its own architecture ({{}}); it is "
                                              f"damaged: train again")


def load_weights(model: Autoencoder, weights: dict[str, Any], path: str | Path, misfit: str) -> Autoencoder:
    """``model`` holding ``weights`` (read from ``path``), in eval mode: non-finite weights are refused, and
    weights of another architecture raise ``RunError(misfit.format(reason))``. A run's checkpoint and a hub
    folder both load through here."""
    check_finite(weights, path)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise RunError(misfit.format(str(err).splitlines()[0][:80])) from None
    model.eval()
    return model


# ------------------------------------------------------------------------------------------ the run folder
@dataclass
class Run:
    path: Path

    # ---------------------------------------------------------------------------------- the files
    @property
    def mark(self) -> Path:
        return self.path / ".aelab-run"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def data_record(self) -> Path:
        return self.path / "data.json"

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
    def eval_cache(self) -> Path:
        return self.path / "eval-cache.safetensors"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    def figure(self, name: str) -> Path:
        """The report's figure ``name`` in ``figures/`` (``figures/NAME.png``)."""
        return self.figures / f"{name}.png"

    @property
    def reconstructions_figure(self) -> Path:
        """The report's random test images beside their reconstructions (``report.run_figures`` draws it, the
        Hugging Face model card shows it)."""
        return self.figure("recon_random")

    @property
    def detector(self) -> Path:
        return self.path / "detector.safetensors"

    @property
    def anomaly(self) -> Path:
        return self.path / "anomaly.json"

    @property
    def explorer(self) -> Path:
        return self.path / "explorer"

    @property
    def hub(self) -> Path:
        """Where ``aelab export --format hub`` writes without -o."""
        return self.path / "hub"

    @property
    def exports(self) -> Path:
        """Where ``aelab export`` (ONNX, TorchScript) writes without -o."""
        return self.path / "export"

    @property
    def facts(self) -> Path:
        return self.path / "facts.json"

    @property
    def tracking(self) -> Path:
        return self.path / "tracking.json"

    @property
    def tensorboard(self) -> Path:
        """The folder TensorBoard's event files go in: the run folder itself (one run per folder of the runs)."""
        return self.path

    def event_files(self) -> list[Path]:
        """TensorBoard's event files of this run, oldest first (their names begin with the time)."""
        return sorted(self.tensorboard.glob("events.out.tfevents.*"))

    def projection(self, method: str) -> Path:
        """The explorer's cached 2-D map made by ``method`` (pca, umap, tsne)."""
        return self.explorer / f"projection-{method}.npz"

    def files(self) -> tuple[Path, ...]:
        """Every file and folder aelab writes in a run (the lock aside): all that ``clear`` may delete."""
        return (self.mark, self.config_file, self.data_record, self.best, self.last, self.history, self.metrics,
                self.pca, self.eval_cache, self.figures, self.report, self.detector, self.anomaly, self.explorer,
                self.hub, self.exports, self.facts, self.tracking, *self.event_files())

    # ---------------------------------------------------------------------------------- what the folder is
    def writing(self) -> AbstractContextManager[None]:
        """The run folder's exclusive write lock (``files.folder_lock``): every writer of a run holds it."""
        return folder_lock(self.path)

    def entries(self) -> list[str]:
        """What the folder holds, less the lock file (empty for a new folder)."""
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME) if self.path.is_dir() else []

    def is_run(self) -> bool:
        """Whether aelab made this folder: it holds aelab's mark, or (a run of an earlier version, made before the
        mark) its ``config.yaml`` beside a checkpoint in aelab's format. A user's folder that merely holds a
        ``config.yaml``, a ``metrics.json`` or a ``report.html`` is not a run."""
        mark = None
        try:
            if self.mark.is_file():  # a small JSON file: a foreign file of that name is not read whole
                with self.mark.open("rb") as fh:
                    mark = json.loads(fh.read(4096))
        except (OSError, ValueError, RecursionError):
            pass
        if isinstance(mark, dict) and mark.get("format") == MARK_FORMAT:
            return True
        return self.config_file.is_file() and any(peek(p) is not None for p in (self.last, self.best))

    def start(self) -> None:
        """Mark the folder as a run made by aelab: a new run writes this before any other file of its own."""
        write_json(self.mark, {"format": MARK_FORMAT, "note": "made by aelab: 'aelab train --resume' continues it, "
                                                               "a restart deletes only the files aelab wrote"})

    def clear(self) -> None:
        """Delete every file aelab writes in a run (``files``), and nothing else: a restart of a run that never
        finished an epoch. A link among them is removed, never what it points to."""
        for target in self.files():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    def check_place(self) -> None:
        """``OutputError`` naming the fix when no run can be written at ``path``: a symbolic link to nothing, a
        file, a parent that is not a folder, or a folder this process may not write in (a read-only folder or
        file system). Cheap, and it writes nothing, so a new run checks it before loading any data."""
        p = self.path
        if p.is_symlink() and not p.exists():
            raise OutputError(f"--out {p} is a symbolic link to {os.readlink(p)}, which does not exist; create the "
                              f"folder it points to, or give another --out")
        if p.exists() and not p.is_dir():
            raise OutputError(f"--out {p} is a file; give a folder for the run")
        here = p if p.exists() else next(a for a in p.absolute().parents if os.path.lexists(a))
        if not here.is_dir():
            what = f"a symbolic link to {os.readlink(here)}, which does not exist" if here.is_symlink() else "a file"
            raise OutputError(f"cannot make the run folder {p}: {here} is {what}; give another --out")
        if not os.access(here, os.W_OK | os.X_OK):
            raise OutputError(f"cannot make the run folder {p}: {here} is not writable (permissions or a read-only "
                              f"file system); give an --out you can write to")

    def stopped(self) -> str | None:
        """Why training ended (completed, early-stopping, time-budget), from the last checkpoint's description;
        None while it has not ended (or there is no checkpoint)."""
        loop = (peek(self.last) or {}).get("loop")
        stopped = loop.get("stopped") if isinstance(loop, dict) else None
        return str(stopped) if stopped else None

    def unfinished(self, report: bool) -> list[str]:
        """What a run whose training ended still lacks: its metrics and, when ``report``, its report (a kill or
        Ctrl-C during the evaluation leaves them out; ``aelab train --resume`` makes them)."""
        wanted = (self.metrics, self.report) if report else (self.metrics,)
        return [p.name for p in wanted if not p.is_file()]

    def epochs_done(self) -> int:
        """Completed epochs according to history.csv (0 when there is none)."""
        try:
            lines = self.history.read_text(errors="replace").splitlines() if self.history.is_file() else []
        except OSError:
            return 0
        return max(0, len([line for line in lines if line.strip()]) - 1)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run folder; raises ``RunError`` when it is missing, has no config or is not aelab's."""
        p = Path(path)
        if not p.is_dir():
            raise RunError(f"run folder {p} does not exist; give the folder 'aelab train' printed")
        run = cls(p)
        if not run.config_file.is_file():
            raise RunError(f"{p} is not an aelab run (no {run.config_file.name}); give the folder 'aelab train' "
                           f"printed")
        if not run.is_run():
            raise RunError(f"{p} is not an aelab run (no {run.mark.name} mark and no aelab checkpoint beside its "
                           f"{run.config_file.name}); give the folder 'aelab train' printed")
        return run

    # ---------------------------------------------------------------------------------- reading and writing
    def config(self) -> RunConfig:
        try:
            data = read_config_file(self.config_file)
        except AelabError as err:
            raise RunError(f"{self.config_file} cannot be read back ({err}); restore it or train a new run") from None
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
            raise RunError(f"{self.path} has no {self.metrics.name}; run 'aelab evaluate {self.path}' first")
        try:
            metrics = json.loads(self.metrics.read_text())
        except (OSError, ValueError, RecursionError):
            metrics = None
        if not isinstance(metrics, dict):
            raise RunError(f"{self.metrics} is damaged; rebuild it with 'aelab evaluate {self.path}'")
        return metrics

    def save_pca(self, pca: PCAModel) -> None:
        save_checkpoint(self.pca, pca.state(), {"latent": pca.latent, "shape": list(pca.shape)})

    def load_pca(self) -> PCAModel | None:
        from aelab.models import PCAModel  # lazy: Run's names and records work without torch (aelab runs)

        if not self.pca.is_file():
            return None
        tensors, meta = load_checkpoint(self.pca)
        return PCAModel.from_state(tensors, tuple(meta.get("shape") or (1, 28, 28)))

    def save_data(self, record: dict[str, Any]) -> None:
        """Keep what the run was trained on (``DataBundle.record``: source, shape, fingerprints) in data.json."""
        write_json(self.data_record, record)

    def load_data(self) -> dict[str, Any] | None:
        """The run's data.json, or None: for runs made before it existed, and for a damaged one (not JSON, or not
        of the record's shape: ``RECORD_TYPES``), which a warning names; what reads it gets a valid record."""
        if not self.data_record.is_file():
            return None
        try:
            record = json.loads(self.data_record.read_text())
        except (OSError, ValueError, RecursionError) as err:
            problem = f"not JSON: {type(err).__name__}"
        else:
            problem = record_problem(record)
            if problem is None:
                return record
        warnings.warn(f"{self.data_record} is damaged ({problem}); it is ignored (the check that the data are "
                      f"the ones the run was trained on is skipped): restore it, or train the run again",
                      stacklevel=2)
        return None


def record_problem(record: Any) -> str | None:
    """What makes ``record`` not a data.json record (None when it is one): a mapping whose known keys hold values
    of their type (``RECORD_TYPES``; a missing key is allowed: earlier versions wrote fewer)."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not a mapping"
    for key, (kind, item) in RECORD_TYPES.items():
        if key not in record:
            continue
        value = record[key]
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if not isinstance(value, kind) or item is not None and any(
                not isinstance(v, item) or isinstance(v, bool) for v in values):
            return f"its {key!r} is not a {kind.__name__}{f' of {item.__name__}' if item else ''}"
    shape = record.get("shape")
    if shape is not None and (len(shape) != 3 or min(shape) < 1):
        return f"its 'shape' {shape} is not (channels, height, width)"
    if isinstance(record.get("images"), dict) and any(v < 0 for v in record["images"].values()):
        return "its 'images' counts are negative"
    return None
