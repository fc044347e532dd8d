"""Bounded, off-event-loop execution of model inference, and cross-request batching.

Decoding, feature extraction and the encoder are CPU/GPU bound and release the GIL for most
of their time, so they run in a small dedicated thread pool. A semaphore keeps at most
`workers` jobs submitted at once, and at most `max_pending` requests may wait for a slot;
beyond that the service answers 503 at once instead of queueing without bound.

`SegmentBatcher` gathers the segments of requests embedded at the same time into one forward
pass per encoder branch: a GPU given one request's ten segments at a time idles between kernel
launches while the other requests queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


class OverloadedError(Exception):
    """More requests are waiting for inference than `max_pending` allows."""


class DeviceOutOfMemoryError(Exception):
    """The inference device ran out of memory for this request (503; the service goes on)."""


@dataclass
class _Job:
    features: torch.Tensor  # (n, n_mels, frames), on the embedding device
    domain: str
    result: cf.Future = field(default_factory=cf.Future)


class SegmentBatcher:
    """One thread that runs `encode(segments, domain)` on the segments of concurrent requests.

    `embed(features, domain)` (blocking, from any thread) queues a request's segments and
    returns their embeddings (n, embed_dim). The batcher thread takes the first queued request,
    then for up to `max_wait_s` (0: only what is already queued) takes more, until
    `max_segments` are gathered; it then runs one `encode` per domain present and hands each
    request its rows. A request larger than `max_segments` runs on its own. Rows are
    independent in inference mode (batch norm uses its running statistics), so a request's
    embeddings do not depend on what it was batched with.
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor, str], np.ndarray],
        max_segments: int = 64,
        max_wait_s: float = 0.005,
    ):
        self.encode = encode
        self.max_segments = max_segments
        self.max_wait_s = max_wait_s
        self.batches = 0  # forward passes run, for metrics and tests
        self.batched_requests = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="segment-batcher", daemon=True)
        self._thread.start()

    def embed(self, features: torch.Tensor, domain: str) -> np.ndarray:
        """(n, n_mels, frames) segments -> (n, embed_dim) float32; raises what `encode` raises."""
        job = _Job(features, domain)
        self._queue.put(job)
        return job.result.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs, stop = self._gather(first)
            for domain in dict.fromkeys(j.domain for j in jobs):
                self._run(domain, [j for j in jobs if j.domain == domain])
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, n = [first], len(first.features)
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_segments:
            try:
                left = deadline - time.monotonic()
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job.features)
        return jobs, False

    def _run(self, domain: str, jobs: list[_Job]) -> None:
        try:
            feats = jobs[0].features if len(jobs) == 1 else torch.cat([j.features for j in jobs])
            emb = self.encode(feats, domain)
        except Exception as err:  # every waiting request learns what went wrong
            for j in jobs:
                j.result.set_exception(err)
            return
        self.batches += 1
        self.batched_requests += len(jobs)
        start = 0
        for j in jobs:
            j.result.set_result(emb[start : start + len(j.features)])
            start += len(j.features)


class InferencePool:
    """Runs blocking callables in `workers` threads, never more at once."""

    def __init__(self, workers: int, max_pending: int):
        self.workers = workers
        self.max_pending = max_pending
        self._executor = cf.ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self._slots = asyncio.Semaphore(workers)
        self.waiting = 0
        self.running = 0

    async def run(self, fn: Callable[..., T], *args) -> T:
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

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
