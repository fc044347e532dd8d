"""Bounded, off-event-loop execution of model inference, and cross-request batching.

Decoding, feature extraction and the encoder are CPU/GPU bound and release the GIL for most
of their time, so they run in a small dedicated thread pool. A semaphore keeps at most
`workers` jobs submitted at once, and at most `max_pending` requests may wait for a slot;
beyond that the service answers 503 at once instead of queueing without bound.

`SegmentBatcher` gathers the segments of requests embedded at the same time into one forward
pass per encoder branch: a GPU given one request's ten segments at a time idles between kernel
launches while the other requests queue. On CUDA it also chooses those segments for the whole
batch at once (features and voice detector over every request's audio).
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

from model.errors import AudioError
from model.features import SegmentSelection

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


# Segments chosen for several waveforms at once (`Embedder.select_many`): for each, its
# selection or the error that waveform raises alone.
SelectMany = Callable[[list[np.ndarray], list[str]], list[SegmentSelection | AudioError]]


@dataclass(eq=False)  # identity: a job is one request
class _Job:
    domain: str
    size: int  # segments (for a waveform: at most this many)
    audio: np.ndarray | None = None  # a waveform whose segments the batch chooses
    selection: SegmentSelection | None = None  # the segments to embed (features on the device)
    done: bool = False
    result: np.ndarray | None = None
    error: Exception | None = None


class SegmentBatcher:
    """Runs `encode(selections, domain)` on the segments of concurrent requests together, and
    with `select`, chooses those segments together too.

    `embed(selection, domain)` (blocking, from the inference threads) returns the vectors of
    a request's segments (n, embed_dim); `embed_audio(y, domain)` (needs `select`) takes the decoded
    waveform instead and returns its selection and embeddings, the selection made by one
    `select` call over every waveform of the batch. No thread of its own: the first caller to
    find no batch running leads one. It takes its own job, then, while other requests are
    still decoding or computing features (`announce()`) and for at most `max_wait_s`, the
    jobs that arrive, up to `max_segments`; runs `select` on the waveforms, one `encode` per
    domain present; and hands every request its rows. Callers that arrive meanwhile wait,
    and one of them leads the next batch. A lone request therefore never waits nor changes
    thread; a request larger than `max_segments` runs on its own. Rows are independent in
    inference mode (batch norm uses its running statistics), so a request's embeddings do
    not depend on its batch; an error of one waveform's selection is that request's alone.
    `segment_samples`: samples of one segment, to size a waveform's job.
    """

    def __init__(
        self,
        encode: Callable[[list[SegmentSelection], str], np.ndarray],
        max_segments: int = 64,
        max_wait_s: float = 0.005,
        select: SelectMany | None = None,
        segment_samples: int = 1,
    ):
        self.encode = encode
        self.select = select
        self.segment_samples = segment_samples
        self.max_segments = max_segments
        self.max_wait_s = max_wait_s
        self.batches = 0  # forward passes run, for metrics and tests
        self.batched_requests = 0
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._preparing = 0
        self._leading = False

    def announce(self) -> None:
        """A request will submit soon (it is decoding or computing features): a batch being
        gathered waits for it. Follow with `embed`/`embed_audio(..., announced=True)` or
        `withdraw()`."""
        with self._cond:
            self._preparing += 1

    def withdraw(self) -> None:
        """An announced request will not submit (its decoding or features failed)."""
        with self._cond:
            self._preparing -= 1
            self._cond.notify_all()

    def embed(
        self, selection: SegmentSelection, domain: str, announced: bool = False
    ) -> np.ndarray:
        """A selection of n segments -> (n, embed_dim) float32; raises what `encode` raises."""
        job = self._submit(_Job(domain, len(selection), selection=selection), announced)
        assert job.result is not None  # done without error: the pass gave its rows
        return job.result

    def embed_audio(
        self, y: np.ndarray, domain: str, announced: bool = False
    ) -> tuple[SegmentSelection, np.ndarray]:
        """Waveform (samples,) at the model's rate -> (its selection, (n, embed_dim) float32
        embeddings of the selected segments); raises what `select` gives for it (AudioError)
        and what `select` or `encode` raise."""
        if self.select is None:
            raise RuntimeError("this batcher was made without select: it takes segments")
        size = max(1, len(y) // self.segment_samples)
        job = self._submit(_Job(domain, size, audio=y), announced)
        assert job.selection is not None and job.result is not None
        return job.selection, job.result

    def _submit(self, job: _Job, announced: bool) -> _Job:
        """Queue `job`, lead or wait for the batch that runs it; raises its error."""
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
        return job

    def _gather(self, own: _Job) -> list[_Job]:
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            while (
                self._preparing > 0
                and sum(j.size for j in self._pending) < self.max_segments
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            jobs, n = [own], own.size
            for j in self._pending:
                if j is not own and n + j.size <= self.max_segments:
                    jobs.append(j)
                    n += j.size
            self._pending = [j for j in self._pending if j not in jobs]
        return jobs

    def _choose(self, jobs: list[_Job]) -> None:
        """Select the segments of the jobs that hold a waveform, in one `select` call."""
        audio = [(j, j.audio) for j in jobs if j.audio is not None]
        if not audio:
            return
        assert self.select is not None  # embed_audio refuses waveforms without it
        chosen: list[SegmentSelection | Exception]
        try:
            chosen = list(self.select([y for _, y in audio], [j.domain for j, _ in audio]))
        except Exception as err:  # every waveform of the call learns what went wrong
            chosen = [err] * len(audio)
        for (j, _), sel in zip(audio, chosen, strict=True):
            j.audio = None
            if isinstance(sel, Exception):
                j.error = sel
            else:
                j.selection = sel

    def _run(self, jobs: list[_Job]) -> None:
        self._choose(jobs)
        with self._cond:
            for j in jobs:
                j.done = j.error is not None
            self._cond.notify_all()
        jobs = [j for j in jobs if j.error is None]
        for domain in dict.fromkeys(j.domain for j in jobs):
            group = [j for j in jobs if j.domain == domain]
            emb: np.ndarray | None = None
            error: Exception | None = None
            try:
                emb = self.encode([j.selection for j in group if j.selection is not None], domain)
                self.batches += 1
                self.batched_requests += len(group)
            except Exception as err:  # every request of the pass learns what went wrong
                error = err
            with self._cond:
                start = 0
                for j in group:
                    j.error = error
                    if emb is not None and j.selection is not None:
                        j.result = emb[start : start + len(j.selection)]
                        start += len(j.selection)
                    j.done = True
                self._cond.notify_all()
