"""Batches of a data set read from disk (``data.stream``), gathered by a background thread while the caller trains
on the current one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from aelab.data.stream import ImageStore


class Prefetcher:
    """The batches ``store[idx]`` for each ``idx`` of ``indices``, in order, gathered by a background thread
    ``depth`` batches ahead (into pinned memory with ``pin``) while the caller trains on the current one.
    Use as a context manager (or call ``close``): the thread stops when the caller stops early."""

    _END = object()

    def __init__(self, store: ImageStore, indices: Iterable[Any], depth: int = 2, pin: bool = False):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._work, args=(store, iter(indices), pin), daemon=True,
                                        name="aelab-prefetch")
        self._thread.start()

    def _work(self, store: ImageStore, indices: Iterator[Any], pin: bool) -> None:
        try:
            for idx in indices:
                batch = store[idx]
                if pin:
                    batch = batch.pin_memory()
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as err:  # re-raised in the caller's thread
            self._put(err)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self._ended:
            raise StopIteration  # the end marker was taken already: another get() would wait forever
        item = self._queue.get()
        if item is self._END:
            self._ended = True
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
