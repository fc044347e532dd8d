"""Decoding in worker processes: encoded audio in, waveforms (or chosen segments) out.

Decoding, mixdown, resampling and segment choice hold the GIL for part of their time, so
threads of one process queue behind each other once there are many cores: on a 16-core GPU
machine the threaded indexer kept 40 % of the threaded decode-only rate, and `/identify`
stopped at about 33 requests/s from 8 clients on (README, GPU figures; uploads were then
still read through Python callbacks, see `model.audio._in_memory_file`). A `DecodePool`
runs `model.audio.load_audio` in spawned worker processes instead; the caller's thread waits
for the result without holding the GIL.

Two kinds of job:
- `load_audio`: the waveform comes back; features, voice detection and the encoder run in
  the caller's process, on the model's device (the service on CUDA, where features are
  cheap on the GPU).
- `select` (a pool made with `features`): the worker also computes features and runs the
  voice detector on its CPU, and only the chosen segments come back (the indexer on a
  machine whose cores, not its GPU, are the limit).

Workers are spawned, not forked: forking a process that has initialised CUDA or torch's
thread pools is unsafe. A worker that dies (a decoder crash on a hostile file, the OOM
killer) breaks the whole executor: the pool starts a fresh one, and every job that was in
flight runs again alone in a one-process pool, so requests that happened to share the pool
with a bad file are not lost; a job that kills its worker even alone is refused as an
`AudioError` (the service's 422), never a crash of the caller.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from model.audio import AudioSource, load_audio
from model.errors import AudioError

if TYPE_CHECKING:
    from model.features import FeatureConfig, SegmentSelection
    from model.voice import VoiceDetector

log = logging.getLogger(__name__)
T = TypeVar("T")

# The worker's voice detector (CPU), set once by the initializer: one copy per process
# instead of one pickled with every job.
_worker_detector: VoiceDetector | None = None
# The worker's threads for the later pieces of a file decoded in pieces, made on first use.
_worker_helpers: cf.ThreadPoolExecutor | None = None


def _init_worker(detector: VoiceDetector | None) -> None:
    global _worker_detector
    _worker_detector = detector
    # Ctrl-C reaches the whole process group: the parent handles it (an indexing run commits
    # what it has); a worker that died of it would only break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if detector is not None:
        import torch

        # One process per core already: torch's own pool would oversubscribe them.
        torch.set_num_threads(1)


def _select_job(
    source: AudioSource,
    cfg: FeatureConfig,
    max_seconds: float | None,
    all_segments: bool,
    domain: str | None,
    path: str | None,
) -> SegmentSelection:
    from model.features import select_segments

    y = load_audio(source, cfg.sample_rate, max_seconds)
    return select_segments(
        y, cfg, all_segments, device="cpu", path=path, detector=_worker_detector, domain=domain
    )


def _load_job(source: AudioSource, sr: int, max_seconds: float | None, parts: int) -> np.ndarray:
    global _worker_helpers
    if parts > 1 and _worker_helpers is None:  # a worker runs one job at a time: no race
        _worker_helpers = cf.ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="piece")
    return load_audio(source, sr, max_seconds, parts=parts, executor=_worker_helpers)


def _ready() -> bool:
    return True


class DecodePool:
    """`processes` worker processes that decode audio; thread-safe, blocking calls.

    features / detector: give the feature recipe (and the voice detector, copied to the
    CPU) to let workers choose segments too (`select`); without them only `load_audio`.
    """

    def __init__(
        self,
        processes: int,
        features: FeatureConfig | None = None,
        detector: VoiceDetector | None = None,
    ):
        if processes < 1:
            raise ValueError("a decode pool needs at least one process")
        self.processes = processes
        self.features = features
        self._detector = detector.to("cpu") if detector is not None else None
        self._lock = threading.Lock()
        self._executor = self._start(processes)
        self.restarts = 0  # executors replaced after a worker died
        self._alone_lock = threading.Lock()
        self._alone: cf.ProcessPoolExecutor | None = None  # retries, one job at a time

    def _start(self, processes: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            processes,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._detector,),
        )

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker (fn and args picklable); raises what fn raises, and
        AudioError when the job kills its worker even when it runs alone."""
        executor = self._executor
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool:
            self._replace(executor)
        # A worker died while this job was in flight, perhaps because of another job: run it
        # again alone, one job at a time in a one-process pool, so that a death there is
        # certainly its own.
        with self._alone_lock:
            if self._alone is None:
                self._alone = self._start(1)
            try:
                return self._alone.submit(fn, *args).result()
            except BrokenProcessPool:
                self._alone.shutdown(wait=False, cancel_futures=True)
                self._alone = None
        raise AudioError(
            "the decoder process died on this audio (a corrupt or hostile file); nothing was "
            "decoded"
        )

    def _replace(self, broken: cf.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:  # another thread already replaced it
                return
            log.warning("a decoding worker process died; starting a fresh pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start(self.processes)
            self.restarts += 1

    def load_audio(
        self, source: AudioSource, sr: int, max_seconds: float | None = None, parts: int = 1
    ) -> np.ndarray:
        """`model.audio.load_audio` in a worker: mono float32 (samples,) at `sr` Hz; `parts`
        > 1: in up to that many pieces at once, on threads of the worker."""
        return self.call(_load_job, source, sr, max_seconds, parts)

    def select(
        self,
        source: AudioSource,
        all_segments: bool = False,
        max_seconds: float | None = None,
        domain: str | None = None,
    ) -> SegmentSelection:
        """Decode and choose segments in a worker (`model.features.select_segments` on its
        CPU, with the pool's detector): features (n, n_mels, frames) on the CPU."""
        if self.features is None:
            raise RuntimeError("this pool was made without features: it only decodes")
        path = None if isinstance(source, bytes) else str(source)
        return self.call(
            _select_job, source, self.features, max_seconds, all_segments, domain, path
        )

    def warm_up(self) -> None:
        """Start every worker now (spawning takes about a second), not on the first jobs."""
        executor = self._executor
        for fut in [executor.submit(_ready) for _ in range(2 * self.processes)]:
            fut.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._alone_lock:
            if self._alone is not None:
                self._alone.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
