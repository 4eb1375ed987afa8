"""The training loop: batches sliced from in-memory tensors (or gathered from a data set read from disk, the next
ones prefetched), early stopping, checkpoints, exact resume.

``Trainer(cfg, run).fit()`` trains a run folder. Every epoch writes ``last.safetensors`` (model, optimizer,
schedule, RNG and loop state) and, when the validation loss improves, ``best.safetensors``. Ctrl-C finishes
the current batch, writes a resumable checkpoint and stops; ``Trainer(..., resume=True)`` continues from it
to the same weights the uninterrupted run would have reached.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from aelab.allocator import keep_freed_memory
from aelab.checkpoints import load_checkpoint, save_checkpoint
from aelab.config import RunConfig, settle_model
from aelab.data import DataBundle, load_dataset, to_float
from aelab.data.noise import TRAIN_STREAM, VAL_STREAM, NoiseSpec, corrupt_images, generator_for
from aelab.data.prefetch import Prefetcher
from aelab.data.stream import ImageStore
from aelab.device import CoreShare, select_device, select_precision
from aelab.errors import ConfigError, Interrupted, RunError, TrainingDiverged
from aelab.evaluation.passes import BatchedInference
from aelab.files import atomic_write_text
from aelab.models import Autoencoder, build_model, is_convolutional, padding_note_of
from aelab.runs import Run
from aelab.tracking import Trackers
from aelab.training.losses import make_loss
from aelab.training.optim import make_optimizer, make_scheduler
from aelab.training.state import flatten_state, unflatten_state

SHARE_SECONDS = 5.0  # how often a training without --threads measures the cores others leave free
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s", "best")


@dataclass
class LoopState:
    epoch: int = 0              # completed epochs
    batch: int = 0              # batches done in the current (incomplete) epoch
    step: int = 0               # optimizer steps in all
    loss_sum: float = 0.0       # running sum of the current epoch's batch losses (weighted by images)
    seen: int = 0               # images seen in the current epoch
    epoch_seconds: float = 0.0  # seconds spent in the current epoch so far
    elapsed: float = 0.0        # training seconds in all
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: str | None = None  # why the run ended: completed, early-stopping, time-budget
    planned_epochs: int = 0     # epochs the schedule spans once the time budget was checked (0: not yet)
    history: list[dict[str, Any]] = field(default_factory=list)


def budget_epochs(epochs: int, budget_seconds: float, epoch_seconds: float) -> int:
    """How many of ``epochs`` epochs of ``epoch_seconds`` each fit in ``budget_seconds`` (at least 1)."""
    if epoch_seconds <= 0:
        return epochs
    return max(1, min(epochs, int(budget_seconds // epoch_seconds)))


class Trainer:
    """Train ``cfg`` into the run folder ``run``; ``resume=True`` continues from ``run.last``."""

    trackers: Trackers = Trackers()  # TensorBoard/MLflow (aelab.tracking): the job gives rank 0 its own; none here

    def __init__(self, cfg: RunConfig, run: Run, bundle: DataBundle | None = None, resume: bool = False,
                 progress: bool = True, on_epoch_end: Callable[[LoopState], None] | None = None):
        self.cfg, self.run, self.progress, self.on_epoch_end = cfg, run, progress, on_epoch_end
        # --threads N: exactly N. Unset: the cores other processes leave free, measured again every few seconds,
        # so that two trainings on one machine share it instead of collapsing (benchmarks/bench_concurrency.py).
        self.share = None if cfg.threads else CoreShare()
        self._share_checked = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = select_device(cfg.device)
        keep_freed_memory()  # 1.2x faster steps on CPU: no page faults for each step's tensors (allocator.py)
        self.bundle = bundle or load_dataset(cfg.dataset, **cfg.data_kwargs())
        torch.manual_seed(cfg.seed)
        m = settle_model(cfg, self.bundle.shape)[0]  # a model left open (train_job settles it): the data's default
        self.model: Autoencoder = build_model(m.model, **m.model_kwargs(), shape=self.bundle.shape).to(self.device)
        # Channels-last runs the convolutions ~3x faster on CPU (conv-modified, 2 cores: 915 vs 319 img/s side by
        # side). Known cost: channels-last BatchNorm2d in fp32 normalises with ~1e-4 relative error, so the
        # gradients of a deep batch-norm model drift from the NCHW ones by percents (tests/test_fastpath.py,
        # strict xfail); training reaches the same quality (benchmarks/results/recipe.jsonl).
        self.channels_last = is_convolutional(self.model)
        if self.channels_last and padding_note_of(self.model) and not resume:
            warnings.warn(padding_note_of(self.model), stacklevel=2)  # "pad otherwise, and say so"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = make_loss(cfg, self.model)  # a VAE's loss reads its own likelihood terms
        # Denoising (--noise): inputs corrupted on the fly, the target clean; a batch's noise is a pure function of
        # (seed, epoch, batch), so a resumed run draws the same noise (data/noise.py).
        self.noise = NoiseSpec.parse(cfg.noise)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        # bf16 autocast for the forward pass (weights, optimizer and loss stay fp32): on CUDA, and on CPUs with
        # native bf16, where it trains the base model 2x faster than fp32 at the same quality (benchmarks/README.md).
        self.precision = select_precision(cfg.precision, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.opt = make_optimizer(cfg, self.model)
        n = len(self.bundle.train)
        if n == 0:
            raise RunError("the training split is empty; use more classes or a smaller --val-fraction")
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            if cfg.batch_size < 2:
                raise ConfigError(f"--batch-size {cfg.batch_size}: batch norm needs at least 2 images per batch; use "
                                  f"--batch-size 2 or more, or --no-batch-norm")
            if n < 2:
                raise ConfigError(f"the training split holds {n} image; batch norm needs at least 2: use a larger "
                                  f"--train-limit or --no-batch-norm")
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        if n % cfg.batch_size == 1 and self.steps_per_epoch > 1:
            self.steps_per_epoch -= 1  # fold a one-image last batch into the one before (batch norm needs 2)
        self.sched = make_scheduler(cfg, self.opt, self.steps_per_epoch * cfg.epochs)
        self.state = LoopState()
        # A data set read from disk (data.stream) stays there: each batch is gathered from it (the next ones by a
        # background thread, _prefetch) and moved to the device alone. Same images, same order: same run.
        self.streamed = isinstance(self.bundle.train.images, ImageStore)
        if self.streamed and self.noise:
            raise ConfigError(f"--noise {cfg.noise}: denoising needs the validation images in memory, but this data "
                              f"set is read from disk; set AELAB_STREAM=0 if it fits in memory, or drop --noise")
        self.train_x = self.bundle.train.images if self.streamed else self.bundle.train.images.to(self.device)
        self.val_x = self.bundle.val.images if self.streamed else self.bundle.val.images.to(self.device)
        self.val_noisy = corrupt_images(self.bundle.val.images, self.noise, cfg.seed, VAL_STREAM).to(self.device) \
            if self.noise else None  # fixed noise: successive validation losses differ by the weights only
        self._stop_requested = False
        if resume:
            self._restore()

    # -------------------------------------------------------------------------------- checkpoints
    def _save(self, path: Any, full: bool) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        meta: dict[str, Any] = {"hparams": self.model.hparams, "epoch": self.state.epoch,
                                "precision": self.precision}
        if full:
            meta["optimizer"] = flatten_state(self.opt.state_dict(), "optim", tensors)
            meta["scheduler"] = flatten_state(self.sched.state_dict(), "sched", tensors)
            tensors["rng.cpu"] = torch.get_rng_state()
            if self.device.type == "cuda":
                tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
            meta["loop"] = asdict(self.state)
        save_checkpoint(path, tensors, meta)

    def _read_last(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, meta) of ``last.safetensors``; several processes read rank 0's copy (training.distributed)."""
        return load_checkpoint(self.run.last)

    def _restore(self) -> None:
        tensors, meta = self._read_last()
        if "loop" not in meta:
            raise RunError(f"{self.run.last} holds no training state; it cannot be resumed, start a new run")
        if meta.get("hparams") != self.model.hparams:
            raise RunError(f"{self.run.last} is from another architecture than {self.run.config_file}; "
                           f"start a new run with --out")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.opt.load_state_dict(unflatten_state(meta["optimizer"], tensors))
        # Checkpoints store contiguous tensors; give each optimizer state the memory layout of its parameter
        # (channels-last): the fused optimizers pair parameters and states element by element in memory order.
        for param, state in self.opt.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
        self.sched.load_state_dict(unflatten_state(meta["scheduler"], tensors))
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.state = LoopState(**meta["loop"])
        stored = meta.get("precision")
        if stored and stored != self.precision:
            warnings.warn(f"{self.run.last} was trained in {stored} and continues in {self.precision} (--precision "
                          f"{self.cfg.precision}); pass --precision {stored} for an exact continuation", stacklevel=2)

    def write_history(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        w.writerows(self.state.history)
        atomic_write_text(self.run.history, buf.getvalue())

    # -------------------------------------------------------------------------------- the loop
    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images.to(self.device, non_blocking=True))  # in memory: on the device already
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _noisy(self, whole: torch.Tensor, epoch: int, b: int) -> torch.Tensor:
        """This process's share of batch ``b`` of ``epoch`` (``whole``: all its images), corrupted: the noise is
        drawn for the whole batch, so each image gets the same noise whatever the number of processes, and after
        a resume."""
        assert self.noise is not None
        full = self.noise.apply(whole, generator_for(self.cfg.seed, TRAIN_STREAM, epoch, b, self.device))
        x = self._share_of(full)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def validation_loss(self) -> float:
        """Mean loss on the validation split, in fp32 on the inference copy (batch norm folded), whatever the
        training precision: it picks the best checkpoint and drives early stopping."""
        if len(self.val_x) == 0:
            return float("nan")
        run = BatchedInference(self.model)
        if self.val_noisy is None:
            losses = run.map(self.val_x, lambda fast, x: float(self.loss_fn.validation(fast, x)) * len(x))
        else:  # a denoising run: the noisy input against the clean image
            losses = run.map(self.val_x, lambda fast, x, noisy: float(self.loss_fn.validation(fast, x, inputs=noisy))
                             * len(x), self.val_noisy)
        return sum(losses) / len(self.val_x)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.train_x), generator=g)
        return perm if self.streamed else perm.to(self.device)

    def _batch_of(self, perm: torch.Tensor, b: int) -> torch.Tensor:
        """The indices of batch ``b`` of the epoch's permutation (the last batch takes the remainder)."""
        end = (b + 1) * self.cfg.batch_size if b + 1 < self.steps_per_epoch else len(perm)
        return perm[b * self.cfg.batch_size:end]

    def _prefetch(self, perm: torch.Tensor, start: int) -> Prefetcher | None:
        """A data set read from disk: this process's images of the epoch's batches from ``start`` on, gathered by
        a background thread two batches ahead (into pinned memory for a GPU). None for one in memory."""
        if not self.streamed:
            return None
        shares = (self._share_of(self._batch_of(perm, b)) for b in range(start, self.steps_per_epoch))
        return Prefetcher(self.train_x, shares, pin=self.device.type == "cuda")

    # Two hooks for training on several processes (training.distributed.DistributedTrainer overrides them).
    def _share_of(self, batch: torch.Tensor) -> torch.Tensor:
        """The indices of ``batch`` (one optimizer step's images) this process trains on: all of them."""
        return batch

    def _batch_loss(self, loss: torch.Tensor, share: int, total: int) -> tuple[torch.Tensor, float]:
        """(the loss to back-propagate, the batch's mean loss as a number) for a share of ``share`` of ``total``
        images."""
        return loss, float(loss.detach())

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True

    def fit(self) -> LoopState:
        """Train until the planned epochs, early stopping or the time budget; returns the final loop state."""
        with self.run.writing():
            return self._fit()

    def _fit(self) -> LoopState:
        st, cfg = self.state, self.cfg
        if st.stopped:
            raise RunError(f"run {self.run.path} already finished ({st.stopped}); start a new run to train more")
        self._adjust_threads(every=0.0, wait=0.3)
        if st.epoch == 0 and st.batch == 0 and not self.run.last.is_file():
            # A checkpoint before the first batch: a run killed, crashed or diverged in its first epoch resumes.
            self._save(self.run.last, full=True)
        # Ctrl-C finishes the batch and checkpoints; only the main thread may install a signal handler.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if in_main else None
        try:
            while st.epoch < self.epochs and not st.stopped:
                self._fit_schedule_to_budget()  # once, after the first epoch (or on resuming after it)
                if st.epoch >= self.epochs:
                    break
                if cfg.max_minutes and st.batch == 0 and st.history:
                    last = st.history[-1]["seconds"]
                    if st.elapsed + last > cfg.max_minutes * 60:
                        st.stopped = "time-budget"
                        break
                self._epoch()
                if self._stop_requested:
                    break
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        if self._stop_requested and not st.stopped:
            self._save(self.run.last, full=True)
            self.write_history()
            raise Interrupted(f"interrupted at epoch {st.epoch + 1}, batch {st.batch}; resume with "
                              f"'aelab train --resume {self.run.path}'")
        st.stopped = st.stopped or "completed"
        self._save(self.run.last, full=True)
        if not self.run.best.is_file():  # no validation split: the last weights are the best we know
            self._save(self.run.best, full=False)
        return st

    @property
    def epochs(self) -> int:
        """The epochs this run plans: ``cfg.epochs``, or fewer once the time budget shortened the schedule."""
        return self.state.planned_epochs or self.cfg.epochs

    def _fit_schedule_to_budget(self) -> None:
        """After the first epoch: when ``--max-minutes`` would cut the planned epochs short, plan fewer epochs
        and stretch the learning-rate schedule over them, so that the run ends annealed, not cut mid-schedule.

        Measured: the default recipe (12 epochs, one-cycle, 10 minutes) trains ~64 s per epoch in fp32 on a
        2-core Xeon, so the budget stopped it after 9 epochs with the learning rate still at ~30% of its peak.
        The first epoch's training seconds (the clock ``--max-minutes`` counts: validation excluded) set the
        plan; the budget check before each epoch still stops a run that gets slower. Decided once, recorded in
        the checkpoint (``planned_epochs``), so a resumed run keeps the same plan."""
        st, cfg = self.state, self.cfg
        if st.planned_epochs or st.epoch != 1 or st.stopped:
            return
        st.planned_epochs = cfg.epochs
        if not cfg.max_minutes or cfg.schedule == "constant":
            return
        fit = budget_epochs(cfg.epochs, cfg.max_minutes * 60, st.elapsed)
        if fit >= cfg.epochs:
            return
        st.planned_epochs = fit
        self.sched = make_scheduler(cfg, self.opt, self.steps_per_epoch * fit)
        with warnings.catch_warnings():  # stepping a new schedule to where the run is: no optimizer step wanted
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            for _ in range(st.step):
                self.sched.step()
        self._save(self.run.last, full=True)
        message = (f"--max-minutes {cfg.max_minutes:g}: {cfg.epochs} epochs of ~{st.elapsed:.0f} s would overrun "
                   f"it; the {cfg.schedule} schedule now spans {fit} epochs")
        if self.progress:
            tqdm.write(message)

    def _adjust_threads(self, every: float = SHARE_SECONDS, wait: float = 0.0) -> None:
        """With no --threads, use the cores the rest of the machine leaves free (checked every ``every`` s)."""
        now = time.perf_counter()
        if self.share is None or now - self._share_checked < every:
            return
        self._share_checked = now
        threads = self.share.threads(wait)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def _epoch(self) -> None:
        st, cfg = self.state, self.cfg
        perm = self._permutation(st.epoch)
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=st.batch, desc=f"epoch {st.epoch + 1}/{self.epochs}",
                   disable=None if self.progress else True, leave=False, unit="batch")
        t0 = time.perf_counter()
        start_seconds = st.epoch_seconds
        loader = self._prefetch(perm, st.batch)
        try:
            for b in range(st.batch, self.steps_per_epoch):
                batch = self._batch_of(perm, b)
                idx = self._share_of(batch)  # this process's images of the batch (all of them but with several)
                x = self._batch(self.train_x[idx] if loader is None else next(loader))
                x_in = x if self.noise is None else self._noisy(x if idx is batch else self._batch(self.train_x[batch]),
                                                                st.epoch, b)
                with self.autocast:
                    out = self.forward(x_in)  # logits, or a VAE's VAEOutput; the loss compares with the clean x
                loss = self.loss_fn(out, x, epoch=st.epoch + b / self.steps_per_epoch)  # epoch: a VAE's KL warm-up
                loss, value = self._batch_loss(loss, len(idx), len(batch))  # value: the whole batch's mean loss
                if not math.isfinite(value):
                    raise TrainingDiverged(f"the loss became {value} at epoch {st.epoch + 1}, batch {b + 1}; lower "
                                           f"--lr (now {cfg.lr:g}) or change --loss/--optimizer")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.sched.step()
                st.batch, st.step = b + 1, st.step + 1
                st.loss_sum += value * len(batch)
                st.seen += len(batch)
                st.epoch_seconds = start_seconds + time.perf_counter() - t0
                bar.update(1)
                self._adjust_threads()
                if b % 10 == 0 or b + 1 == self.steps_per_epoch:
                    bar.set_postfix(loss=f"{st.loss_sum / st.seen:.4f}",
                                    img_s=f"{(st.seen) / max(st.epoch_seconds, 1e-9):,.0f}")
                if self._stop_requested:
                    bar.close()
                    return
        finally:
            if loader is not None:
                loader.close()
        bar.close()
        val = self.validation_loss()
        seconds = st.epoch_seconds
        st.elapsed += seconds
        st.epoch += 1
        improved = math.isfinite(val) and val < st.best_val - cfg.min_delta
        row = dict(epoch=st.epoch, train_loss=st.loss_sum / max(st.seen, 1), val_loss=val,
                   lr=self.opt.param_groups[0]["lr"], seconds=round(seconds, 3),
                   images_per_s=round(st.seen / max(seconds, 1e-9), 1), best=improved)
        st.history.append(row)
        st.batch, st.loss_sum, st.seen, st.epoch_seconds = 0, 0.0, 0, 0.0
        if improved:
            st.best_val, st.best_epoch, st.bad_epochs = val, st.epoch, 0
            self._save(self.run.best, full=False)
        elif math.isfinite(val):
            st.bad_epochs += 1
            if cfg.patience and st.bad_epochs >= cfg.patience:
                st.stopped = "early-stopping"
        if not math.isfinite(val) and len(self.val_x):
            raise TrainingDiverged(f"the validation loss became {val} at epoch {st.epoch}; lower --lr")
        self._save(self.run.last, full=True)
        self.write_history()
        self.trackers.epoch_end(st.epoch, row, self.model)  # after the history: a kill before it re-logs from it
        if self.progress:
            tqdm.write(f"epoch {st.epoch:>3}/{self.epochs}  train {row['train_loss']:.5f}  val {val:.5f}  "
                       f"{row['images_per_s']:>8,.0f} img/s  {seconds:6.1f} s{'  *best' if improved else ''}")
        if self.on_epoch_end:
            self.on_epoch_end(st)
