"""Decoding in worker processes: encoded audio in, waveforms (or chosen segments) out.

Decoding, mixdown, resampling and segment choice hold the GIL for part of their time, so
threads of one process queue behind each other once there are many cores: on a 16-core GPU
machine the threaded indexer kept 40 % of the threaded decode-only rate, and `/identify`
stopped at about 33 requests/s from 8 clients on (README, GPU figures; uploads were then
still read through Python callbacks, see `model.sndfile_decoder._in_memory_file`). A `DecodePool`
runs `model.audio.load_audio` in spawned worker processes instead; the caller's thread waits
for the result without holding the GIL.

Two kinds of job:
- `load_audio`: the waveform comes back; features, voice detection and the encoder run in
  the caller's process, on the model's device (the service on CUDA, where features are
  cheap on the GPU).
- `select` (a pool made with `features`): the worker also computes features and runs the
  voice detector on its CPU, and only the chosen segments come back (the indexer on a
  machine whose cores, not its GPU, are the limit).

Waveforms and uploads cross the process boundary as files in a scratch folder the pool owns
(`_Spilled`), not through the executor's pipe: one result pipe, read and unpickled by a
single thread of the caller, carried every worker's waveforms. On the 2-core VM, with real
decoding, 10-s takes (882 KB waveforms) cost the caller 1.06 ms of CPU each through the
pipe against 0.78 as files, and went 16 % slower (`python bench/bench_decoding.py`).
The folder is private (mkdtemp, 0700, named after the process), its files' names are the
pool's own, and it is removed with the pool, or by the next pool once its process is gone
(killed before closing it); where a file cannot be written, or no folder made, the data
goes through the pipe as before.

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
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from model.audio import AudioSource, load_audio
from model.errors import AudioError

if TYPE_CHECKING:
    from model.features import FeatureConfig
    from model.segment_selection import SegmentSelection
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


@dataclass(frozen=True)
class _Spilled:
    """Data left as a file in the pool's scratch folder: an upload's bytes on the way to a
    worker (`samples` None), or a decoded float32 waveform of `samples` samples on the way
    back. Whoever receives it reads it; the caller's side removes it."""

    path: str
    samples: int | None = None


SCRATCH_PREFIX = "singer-decode-"
_own_scratch: set[str] = set()  # this process's live scratch folders


def _scratch_folder() -> tempfile.TemporaryDirectory[str] | None:
    """The pool's private scratch folder, named after this process, or None (the pipe) where
    no temporary folder can be made (a read-only file system): slower, never a service that
    cannot start. Folders left by pools whose process was killed before closing them are
    removed first."""
    try:
        _remove_stale(tempfile.gettempdir())
        folder = tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    except OSError as err:
        log.warning("no scratch folder for decoding workers (%s); using the pipe", err)
        return None
    _own_scratch.add(folder.name)
    return folder


def _remove_stale(parent: str) -> None:
    """Remove the scratch folders under `parent` of processes that are gone: killed (SIGKILL,
    the OOM killer) before their pools closed, or an earlier run with this process's pid (a
    restarted container). A live process's folders stay, another user's cannot be touched."""
    with os.scandir(parent) as entries:
        for entry in entries:
            pid = entry.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
            if not entry.name.startswith(SCRATCH_PREFIX) or not pid.isdigit():
                continue
            if int(pid) == os.getpid():  # an earlier run's, when not one of ours
                stale = entry.path not in _own_scratch
            else:
                stale = not _alive(int(pid))
            if stale and entry.is_dir(follow_symlinks=False):
                log.info("removing a dead process's decoding scratch folder %s", entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's
        pass
    return True


def _spill(
    scratch: str, write: Callable[[str], object], samples: int | None = None
) -> _Spilled | None:
    """A new file in `scratch` that `write(path)` fills, or None where it cannot be written
    (disk full: the caller sends the data through the pipe instead)."""
    path = os.path.join(scratch, uuid.uuid4().hex)
    try:
        write(path)
    except OSError as err:
        log.warning("cannot hand audio over as a file (%s); sending it through the pipe", err)
        with suppress(FileNotFoundError):
            os.unlink(path)
        return None
    return _Spilled(path, samples)


def _take_waveform(result: _Spilled | np.ndarray) -> np.ndarray:
    """In the caller: the worker's waveform, its file removed."""
    if isinstance(result, np.ndarray):
        return result
    try:
        y = np.fromfile(result.path, np.float32)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(result.path)
    if len(y) != result.samples:
        raise OSError(f"a decoded waveform came back with {len(y)} of {result.samples} samples")
    return y


def _received(source: AudioSource | _Spilled) -> AudioSource:
    """In the worker: the job's audio, an upload handed over as a file read back as bytes
    (decoded exactly as bytes are, so errors name no scratch path)."""
    return Path(source.path).read_bytes() if isinstance(source, _Spilled) else source


def _select_job(
    source: AudioSource | _Spilled,
    cfg: FeatureConfig,
    max_seconds: float | None,
    all_segments: bool,
    domain: str | None,
    path: str | None,
) -> SegmentSelection:
    from model.segment_selection import select_segments

    y = load_audio(_received(source), cfg.sample_rate, max_seconds)
    return select_segments(
        y, cfg, all_segments, device="cpu", path=path, detector=_worker_detector, domain=domain
    )


def _load_job(
    source: AudioSource | _Spilled,
    sr: int,
    max_seconds: float | None,
    parts: int,
    scratch: str | None,
) -> _Spilled | np.ndarray:
    global _worker_helpers
    if parts > 1 and _worker_helpers is None:  # a worker runs one job at a time: no race
        _worker_helpers = cf.ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="piece")
    y = load_audio(_received(source), sr, max_seconds, parts=parts, executor=_worker_helpers)
    y = np.ascontiguousarray(y, np.float32)
    spilled = None if scratch is None else _spill(scratch, y.tofile, len(y))
    return y if spilled is None else spilled


def _ready() -> bool:
    return True


class DecodePool:
    """`processes` worker processes that decode audio; thread-safe, blocking calls.

    features / detector: give the feature recipe (and the voice detector, copied to the
    CPU) to let workers choose segments too (`select`); without them only `load_audio`.
    handoff: "files" (uploads and waveforms through the scratch folder, module docstring)
    or "pipe" (pickled through the executor, as before; the benchmark's reference).
    """

    def __init__(
        self,
        processes: int,
        features: FeatureConfig | None = None,
        detector: VoiceDetector | None = None,
        handoff: Literal["files", "pipe"] = "files",
    ):
        if processes < 1:
            raise ValueError("a decode pool needs at least one process")
        self.processes = processes
        self.features = features
        self._detector = detector.to("cpu") if detector is not None else None
        # Uploads in and waveforms out, as files (module docstring); removed by close().
        self._scratch = _scratch_folder() if handoff == "files" else None
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
        scratch = self._scratch.name if self._scratch is not None else None
        with self._handed_over(source) as sent:
            return _take_waveform(self.call(_load_job, sent, sr, max_seconds, parts, scratch))

    def select(
        self,
        source: AudioSource,
        all_segments: bool = False,
        max_seconds: float | None = None,
        domain: str | None = None,
    ) -> SegmentSelection:
        """Decode and choose segments in a worker (`model.segment_selection.select_segments`
        on its CPU, with the pool's detector): features (n, n_mels, frames) on the CPU."""
        if self.features is None:
            raise RuntimeError("this pool was made without features: it only decodes")
        path = None if isinstance(source, bytes) else str(source)
        with self._handed_over(source) as sent:
            return self.call(
                _select_job, sent, self.features, max_seconds, all_segments, domain, path
            )

    @contextmanager
    def _handed_over(self, source: AudioSource) -> Iterator[AudioSource | _Spilled]:
        """The job's audio as a worker receives it: an upload's bytes as a scratch file for
        the job's duration (a retry after a worker died reads it again), a path as it is."""
        spilled = None
        if self._scratch is not None and isinstance(source, bytes):
            data = source  # bytes, for the lambda
            spilled = _spill(self._scratch.name, lambda path: Path(path).write_bytes(data))
        try:
            yield source if spilled is None else spilled
        finally:
            if spilled is not None:
                with suppress(FileNotFoundError):
                    os.unlink(spilled.path)

    @property
    def scratch(self) -> Path | None:
        """The folder hand-off files pass through (None with handoff="pipe")."""
        return Path(self._scratch.name) if self._scratch is not None else None

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
        if self._scratch is not None:
            self._scratch.cleanup()  # with any file a cancelled or dead job left
            _own_scratch.discard(self._scratch.name)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
