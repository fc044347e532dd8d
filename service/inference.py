"""Bounded, off-event-loop execution of model inference.

Decoding, feature extraction and the encoder are CPU/GPU bound and release the GIL for most
of their time, so they run in a small dedicated thread pool. A semaphore keeps at most
`workers` jobs submitted at once, and at most `max_pending` requests may wait for a slot;
beyond that the service answers 503 at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class OverloadedError(Exception):
    """More requests are waiting for inference than `max_pending` allows."""


class DeviceOutOfMemoryError(Exception):
    """The inference device ran out of memory for this request (503; the service goes on)."""


class InferencePool:
    """Runs blocking callables in `workers` threads, never more at once."""

    def __init__(self, workers: int, max_pending: int):
        self.workers = workers
        self.max_pending = max_pending
        self._executor = cf.ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self._slots = asyncio.Semaphore(workers)
        self.waiting = 0
        self.running = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread; raises OverloadedError when the queue is full."""
        if self._slots.locked() and self.waiting >= self.max_pending:
            raise OverloadedError(
                f"{self.waiting} requests are already waiting for one of {self.workers} "
                "inference slots; retry later"
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        self.running += 1

        def release(_: cf.Future) -> None:
            # The slot is freed when the thread finishes, not when an awaiting request is
            # cancelled (client gone): the bound holds for the work really running.
            loop.call_soon_threadsafe(self._release)

        future = self._executor.submit(fn, *args)
        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self.running -= 1
        self._slots.release()

    def warm_up(self, fn: Callable[[], Any], timeout_s: float = 120.0) -> set[int]:
        """Start every worker thread now and run `fn()` once in each (blocking; before any
        request). Returns the threads' idents.

        A thread's first inference pays for state that is per thread (on CUDA the cuBLAS and
        cuDNN handles), and the pool would otherwise start its threads one by one as load
        rises: the first requests of a busy minute would pay it. Each task waits for all the
        others to start, so the executor has to give every one a thread of its own."""
        start = threading.Barrier(self.workers, timeout=timeout_s)

        def task() -> int:
            start.wait()
            fn()
            return threading.get_ident()

        futures = [self._executor.submit(task) for _ in range(self.workers)]
        return {f.result(timeout=2 * timeout_s) for f in futures}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
