"""Training one run on several processes with DistributedDataParallel: ``torchrun -m aelab train`` or
``aelab train --nproc N`` (which starts torchrun's own launcher, ``torch.distributed.run``, on this machine).

How a run is split among N processes (ranks):

- **The batch.** Every optimizer step trains on the same global batch as one process would: ``--batch-size``
  images, sliced from the epoch's seeded permutation, which every rank draws alike (what DistributedSampler
  with ``set_epoch`` does). Rank r takes images r, r+N, r+2N, ... of it, so each rank's batch is about
  batch-size / N and together they hold every image of the batch once. Each rank's loss is weighted by its
  share (n_r * N / n), so DDP's gradient average is exactly the gradient of the mean loss over the global
  batch: the learning rate stays as configured (no scaling rule is needed), and the number of steps per
  epoch does not depend on N, so a checkpoint resumes with any number of processes, 1 included.
- **Batch norm** normalises each rank's share (its running statistics come from rank 0's share, which DDP
  broadcasts), unless ``--sync-batch-norm`` (SyncBatchNorm over the global batch; PyTorch runs it on CUDA only).
  Dropout draws its own masks on each rank. Without either, N processes compute one process's run up to float
  rounding (tests/training/test_distributed.py).
- **Validation** runs on all ranks, each on a contiguous slice of the validation split, and the sums are
  added: every image counts once (DistributedSampler would pad the split with repeated images). The final
  evaluation on the test split runs on rank 0 alone, on every image once.
- **Data read from disk** (``data.stream``): every rank maps the same files (an image folder's cache is built
  once, by the first rank to load it, while the others wait) and gathers only its own images of each batch and
  its own slice of the validation split; the page cache holds the pixels once for the whole machine.
- **One writer.** Rank 0 alone writes (checkpoints, history, then metrics, figures, report) and takes the run
  folder's lock; the others read nothing from the folder either: the configuration, the folder and the
  checkpoint to resume from are broadcast by rank 0, so machines need no shared disk.
- **Agreement.** One all-reduce per step carries the loss (so a NaN stops every rank at the same step) and
  any rank's stop request (Ctrl-C); after every epoch rank 0's loop state (timings, early stopping, the time
  budget) is broadcast, so every rank stops at the same step. A rank that dies ends the job: torchrun's agent
  stops the others, and ``--resume`` continues from the last checkpoint.

Backends: gloo for CPU tensors, NCCL for CUDA tensors (``cpu:gloo,cuda:nccl`` where CUDA is present).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run
from torch.nn.parallel import DistributedDataParallel

from aelab.checkpoints import load_checkpoint
from aelab.config import RunConfig
from aelab.data import DataBundle
from aelab.data.stream import rows
from aelab.device import cores
from aelab.errors import AelabError, ConfigError, RunError, one_line
from aelab.runs import Run
from aelab.training.trainer import LoopState, Trainer

TIMEOUT = timedelta(minutes=30)  # a collective waiting longer than this fails instead of hanging


@dataclass(frozen=True)
class World:
    """This process's place in the job, from the variables torchrun sets (one process when they are absent)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1


def world() -> World:
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    return World(rank=int(env.get("RANK", "0")), size=size, local_rank=int(env.get("LOCAL_RANK", "0")),
                 local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))))


def launched() -> bool:
    """True in a process started by torchrun (or its launcher)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


@contextmanager
def process_group() -> Iterator[World]:
    """Join the job's process group for the block when there are several processes (else do nothing)."""
    w = world()
    if w.size <= 1 or dist.is_initialized():
        yield w
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(w.local_rank % max(1, torch.cuda.device_count()))
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as err:
        raise RunError(f"rank {w.rank} cannot join the other {w.size - 1} processes ({one_line(err, 160)}); "
                       f"check the rendezvous options of torchrun") from None
    try:
        yield w
    finally:
        # The DDP model and its reducer hold the process group and often sit in reference cycles (the trainer's
        # bound methods): collected later, at interpreter exit, their gloo threads were torn down after the
        # interpreter and a rank died with SIGABRT ("terminate called without an active exception"). Collect
        # them now, while the group and the interpreter are alive, then destroy the group.
        gc.collect()
        dist.destroy_process_group()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous slice of ``n`` items: the slices cover each item exactly once
    (sizes differ by at most one; nothing is padded)."""
    return n * rank // size, n * (rank + 1) // size


def sharded_sum(n: int, part: Callable[[int, int], float]) -> tuple[float, int]:
    """(sum over all ranks of ``part(lo, hi)`` on each rank's slice of ``n`` items, items counted)."""
    lo, hi = shard_bounds(n, dist.get_rank(), dist.get_world_size())
    totals = torch.tensor([part(lo, hi) if hi > lo else 0.0, float(hi - lo)], dtype=torch.float64)
    dist.all_reduce(totals)
    return float(totals[0]), int(totals[1])


class DistributedTrainer(Trainer):
    """The Trainer on every rank of a process group (see the module's description). On rank 0 it is made
    like a Trainer; on the other ranks ``cfg`` and ``run`` may be None: rank 0's are used."""

    def __init__(self, cfg: RunConfig | None, run: Run | None, bundle: DataBundle | None = None,
                 resume: bool = False, progress: bool = True,
                 on_epoch_end: Callable[[LoopState], None] | None = None):
        if not dist.is_initialized():
            raise RuntimeError("DistributedTrainer needs a process group (training.distributed.process_group)")
        self.world = world()
        # Rank 0's configuration, run folder and decision to resume, on every rank.
        cfg, path, resume = broadcast_object((cfg, None if run is None else str(run.path), resume))
        assert cfg is not None and path is not None
        if self.world.rank:
            run, bundle, progress = Run(Path(path)), None, False
        if cfg.threads is None:  # the machine's cores shared out among this machine's processes
            cfg = dataclasses.replace(cfg, threads=max(1, cores() // self.world.local_size))
        super().__init__(cfg, run, bundle=bundle, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
        self._check_batches()
        if self.device.type == "cuda" and torch.cuda.device_count() < self.world.local_size:
            raise ConfigError(f"{self.world.local_size} processes on this machine but {torch.cuda.device_count()} "
                              f"GPU(s): NCCL needs one GPU per process; use --nproc {torch.cuda.device_count()} or "
                              f"--device cpu")
        if cfg.sync_batch_norm:
            if self.device.type != "cuda":
                raise ConfigError("--sync-batch-norm runs on CUDA only (PyTorch's SyncBatchNorm); drop it on CPU: "
                                  "each process then normalises its share of the batch")
            # Converted in place: the same parameters (the optimizer keeps them) and the same state-dict keys.
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ddp = DistributedDataParallel(self.model, device_ids=[self.device.index or torch.cuda.current_device()]
                                      if self.device.type == "cuda" else None)
        self.forward = torch.compile(ddp) if cfg.compile else ddp
        if self.world.rank:  # dropout: each rank its own masks (rank 0 keeps the stream a checkpoint holds)
            torch.manual_seed(cfg.seed + 1_000_003 * self.world.rank + self.state.step)

    def _check_batches(self) -> None:
        n, size, batch = len(self.train_x), self.world.size, self.cfg.batch_size
        last = n - (self.steps_per_epoch - 1) * batch  # images in the epoch's last step
        norm = not self.cfg.sync_batch_norm and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        need = 2 if norm else 1
        if min(batch, last) // size < need:
            raise ConfigError(
                f"--batch-size {batch} is the global batch: on {size} processes a step of {min(batch, last)} images "
                f"leaves fewer than {need} per process{' (batch norm needs 2)' if norm else ''}; use a larger "
                f"--batch-size, another --train-limit or fewer processes")

    # -------------------------------------------------------------------------------- the hooks
    def _share_of(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[self.world.rank::self.world.size]

    def _batch_loss(self, loss: torch.Tensor, share: int, total: int) -> tuple[torch.Tensor, float]:
        # One all-reduce: the batch's loss (sum over its images) and whether any rank was asked to stop.
        totals = torch.tensor([float(loss.detach()) * share, float(self._stop_requested)], dtype=torch.float64)
        dist.all_reduce(totals)
        if totals[1] > 0:
            self._stop_requested = True
        # DDP averages the ranks' gradients; weighting each rank's mean by its share makes that average the
        # gradient of the whole batch's mean loss.
        return loss * (share * self.world.size / total), float(totals[0]) / total

    def validation_loss(self) -> float:
        full = self.val_x
        if len(full) == 0:
            return float("nan")

        noisy = self.val_noisy  # a denoising run's fixed noisy validation images, sliced alike

        def part(lo: int, hi: int) -> float:
            self.val_x = rows(full, lo, hi)  # a view: a data set read from disk reads only this slice
            self.val_noisy = noisy[lo:hi] if noisy is not None else None
            try:
                return Trainer.validation_loss(self) * (hi - lo)
            finally:
                self.val_x, self.val_noisy = full, noisy

        total, count = sharded_sum(len(full), part)
        return total / count

    def _read_last(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        payload: Any = None
        if self.world.rank == 0:
            try:
                payload = load_checkpoint(self.run.last)
            except AelabError as err:  # every rank raises it, none waits for a checkpoint that will not come
                payload = err
        payload = broadcast_object(payload)
        if isinstance(payload, BaseException):
            raise payload
        return payload

    def _save(self, path: Any, full: bool) -> None:
        if self.world.rank == 0:
            super()._save(path, full)

    def write_history(self) -> None:
        # Called on every rank at the end of each epoch (and on a stop): rank 0's loop state, its timings and
        # its stopping decisions, becomes every rank's, so that all take the same next step.
        shared = broadcast_object(dataclasses.asdict(self.state))
        for key, value in shared.items():
            setattr(self.state, key, value)
        if self.world.rank == 0:
            super().write_history()

    def fit(self) -> LoopState:
        try:
            if self.world.rank == 0:
                return super().fit()  # holds the run folder's lock
            return self._fit()  # the other ranks write nothing, so they take no lock
        except RuntimeError as err:
            if not lost_contact(err):
                raise
            raise RunError(f"rank {self.world.rank} lost contact with another process of the run (it stopped, or "
                           f"its machine is unreachable); the run keeps its last checkpoint: resume it with 'aelab "
                           f"train --resume {self.run.path} [--nproc N]'") from None


def lost_contact(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another process went away (gloo and NCCL raise
    plain RuntimeErrors for it)."""
    text = str(err)
    return isinstance(err, dist.DistError) or any(word in text for word in (
        "gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe", "c10d"))


def make_trainer(cfg: RunConfig, run: Run, **kwargs: Any) -> Trainer:
    """A DistributedTrainer inside a process group of several processes, else a Trainer."""
    return (DistributedTrainer if dist.is_initialized() else Trainer)(cfg, run, **kwargs)


def follow() -> None:
    """Ranks other than 0: train the run rank 0 trains; nothing is read from or written to its folder here."""
    try:
        trainer = DistributedTrainer(None, None, progress=False)
        if not trainer.state.stopped:  # ended: rank 0 only evaluates what is missing (experiments.jobs.resume_job)
            trainer.fit()
    except RuntimeError as err:
        if not lost_contact(err):
            raise
        raise RunError(f"rank {world().rank} lost contact with another process of the run") from None


# ------------------------------------------------------------------------------------------ the launcher
def launch(nproc: int, args: list[str], threads: int | None, run_path: str) -> tuple[int, str | None]:
    """Run ``aelab ARGS`` on ``nproc`` local processes with torchrun's launcher; (exit code, message or None).

    A rank that raised printed its own error (a usage error, a diverged loss, Ctrl-C, losing another rank):
    its exit code is passed on. A rank killed by a signal could say nothing: it gets one line, naming it and
    how to resume.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: use 1 or more processes")
    # Each process takes its share of the cores (torchrun would set 1 thread and say so).
    before = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "PYTHONFAULTHANDLER")}
    os.environ["OMP_NUM_THREADS"] = str(threads or max(1, cores() // nproc))
    # A rank killed by a signal (a native crash) prints every thread's Python stack on its way out: the one
    # line below says which rank died, the stacks say where.
    os.environ["PYTHONFAULTHANDLER"] = "1"
    quiet = {name: logging.getLogger(name).level for name in ("torch.distributed.elastic", "torch.distributed.run")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the failure is reported below, in one line
    try:
        run(parse_args(["--nproc-per-node", str(nproc), "--standalone", "-m", "aelab", *args]))
    except ChildFailedError as err:
        rank, failure = _cause(err)
        if failure.exitcode > 0:
            return failure.exitcode, None
        return 1, (f"rank {rank} of {nproc} was killed by {failure.signal_name()}; the run keeps its last "
                   f"checkpoint: resume it with 'aelab train --resume {run_path} --nproc {nproc}'")
    except Exception as err:  # the launcher itself (rendezvous, a port): not a rank's failure
        return 1, f"cannot start {nproc} processes ({one_line(err, 160)})"
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return 0, None


def _cause(err: ChildFailedError) -> tuple[int, Any]:
    """The failed rank that caused the others' end: one killed by a signal other than the SIGTERM the launcher
    sends the survivors, else one that exited with an error, else the first."""
    for cause in (lambda code: code < 0 and -code != signal.SIGTERM, lambda code: code > 0):
        found = {r: f for r, f in err.failures.items() if cause(f.exitcode)}
        if found:
            return min(found.items())
    return err.get_first_failure()

