"""Prepare the model inputs of upcoming frames in a worker thread, overlapped with tracking.

Tracking a frame is: decode it, resize and normalise it (on the host), run the model. The first
two steps need no model, so while the model runs on frame t a worker thread decodes and
resizes the next frames in tracking order; on CUDA their tensors are put in pinned
(page-locked) memory, so that the copy to the device runs asynchronously instead of stalling
the host. An error in the worker (an unreadable video) is raised where the frame is taken, in
the tracking thread.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")

# Frames prepared ahead of the one being tracked: enough to hide a slow decode behind one
# model step, few enough that their tensors (3 x S x S floats each) stay small.
PREFETCH_DEPTH = 2


class Prefetcher(Generic[T]):
    """Computes `load(index)` for the indices of `order`, up to `depth` ahead, in one worker.

    `take(i)` returns the value for `order`'s index i (waiting for the worker), drops values of
    indices before i in `order` that were never taken, and schedules the next ones; an index
    not in `order` is computed in the calling thread. At most `depth` values are held at once.
    """

    def __init__(self, load: Callable[[int], T], order: Sequence[int], depth: int = PREFETCH_DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._load = load
        self._order = list(order)
        self._position = {index: k for k, index in enumerate(self._order)}
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, Future] = {}

    def _schedule_after(self, k: int) -> None:
        for index in self._order[k + 1: k + 1 + self.depth]:
            if index not in self._pending:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segapp-prefetch")
                self._pending[index] = self._pool.submit(self._load, index)

    def take(self, index: int) -> T:
        """The value for `index`: prepared by the worker when it was scheduled, else computed here."""
        k = self._position.get(index)
        if k is None:
            return self._load(index)
        for other in [i for i in self._pending if self._position[i] < k]:
            self._pending.pop(other).cancel()
        future = self._pending.pop(index, None)
        self._schedule_after(k)
        return self._load(index) if future is None else future.result()

    def close(self) -> None:
        """Cancel what was not started, wait for the worker, and drop every prepared value."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
