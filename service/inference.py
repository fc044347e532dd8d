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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

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

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass(eq=False)  # identity: a job is one request
class _Job:
    features: torch.Tensor  # (n, n_mels, frames), on the embedding device
    domain: str
    done: bool = False
    result: np.ndarray | None = None
    error: Exception | None = None


class SegmentBatcher:
    """Runs `encode(segments, domain)` on the segments of concurrent requests together.

    `embed(features, domain)` (blocking, from the inference threads) returns a request's
    embeddings (n, embed_dim). No thread of its own: the first caller to find no batch running
    leads one. It takes its own segments, then, while other requests are still computing
    their features (`announce()`) and for at most `max_wait_s`, the segments of those that
    arrive, up to `max_segments`; runs one `encode` per domain present; and hands every
    request its rows. Callers that arrive meanwhile wait, and one of them leads the next batch.
    A lone request therefore never waits nor changes thread; a request larger than
    `max_segments` runs on its own. Rows are independent in inference mode (batch norm uses
    its running statistics), so a request's embeddings do not depend on its batch.
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
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._preparing = 0
        self._leading = False

    def announce(self) -> None:
        """A request will submit segments soon (it is computing features): a batch being
        gathered waits for it. Follow with `embed(..., announced=True)` or `withdraw()`."""
        with self._cond:
            self._preparing += 1

    def withdraw(self) -> None:
        """An announced request will not submit (its features failed)."""
        with self._cond:
            self._preparing -= 1
            self._cond.notify_all()

    def embed(self, features: torch.Tensor, domain: str, announced: bool = False) -> np.ndarray:
        """(n, n_mels, frames) segments -> (n, embed_dim) float32; raises what `encode` raises."""
        job = _Job(features, domain)
        with self._cond:
            self._preparing -= announced
            self._pending.append(job)
            self._cond.notify_all()  # a leader gathering a batch may take this job
            while self._leading and not job.done:
                self._cond.wait()
            lead = not job.done
            self._leading = self._leading or lead
        if lead:
            try:
                self._run(self._gather(job))
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        assert job.result is not None  # done without error: the pass gave its rows
        return job.result

    def _gather(self, own: _Job) -> list[_Job]:
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            while (
                self._preparing > 0
                and sum(len(j.features) for j in self._pending) < self.max_segments
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            jobs, n = [own], len(own.features)
            for j in self._pending:
                if j is not own and n + len(j.features) <= self.max_segments:
                    jobs.append(j)
                    n += len(j.features)
            self._pending = [j for j in self._pending if j not in jobs]
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        for domain in dict.fromkeys(j.domain for j in jobs):
            group = [j for j in jobs if j.domain == domain]
            emb: np.ndarray | None = None
            error: Exception | None = None
            try:
                feats = torch.cat([j.features for j in group]) if len(group) > 1 else None
                emb = self.encode(group[0].features if feats is None else feats, domain)
                self.batches += 1
                self.batched_requests += len(group)
            except Exception as err:  # every request of the pass learns what went wrong
                error = err
            with self._cond:
                start = 0
                for j in group:
                    j.error = error
                    if emb is not None:
                        j.result = emb[start : start + len(j.features)]
                        start += len(j.features)
                    j.done = True
                self._cond.notify_all()
