"""What the app serves with: the loaded model, the catalogue and the inference pool.

Loading happens once, in a thread started by the app's lifespan, so the server answers
`/healthz` (and `/readyz` with 503) while a large model or index is still loading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from catalog import CatalogBackend, Track, open_catalog
from model.audio import load_audio
from model.calibration import Calibration, CalibrationError, calibration_path, find_calibration
from model.decode_pool import DecodePool
from model.domains import AUTO
from model.embedding import Embedder, TrackEmbedding, inference_threads
from model.errors import AudioError
from model.features import choose_branch, selection_domain
from service.audio_files import AudioFiles
from service.errors import ApiError
from service.inference import DeviceOutOfMemoryError, InferencePool, SegmentBatcher
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# Another process (the batch indexer) may write to the catalogue while the service runs; the
# checkpoints it holds are re-read at most this often on the query path, and on every /readyz.
CHECKPOINT_RECHECK_S = 30.0


class Runtime:
    """Shared state of one app instance. `state` is 'loading', 'ready' or 'failed'."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.state = "loading"
        self.error: str | None = None
        self._embedder: Embedder | None = None
        self._catalog: CatalogBackend | None = None
        # The loaded checkpoint's score calibration; None: answers carry no verdict.
        self.calibration: Calibration | None = None
        self.calibration_status = "not loaded"
        # Checkpoints other than the loaded one that computed vectors in the catalogue.
        self.foreign_checkpoints: set[str] = set()
        self._checkpoints_read_at = 0.0
        self.audio = AudioFiles(settings)
        self.pool = InferencePool(settings.inference_workers, settings.max_pending)
        self.batcher: SegmentBatcher | None = None
        self.decoder: DecodePool | None = None
        # Threads that decode the later pieces of an upload while its inference thread
        # decodes the first (None: uploads are decoded whole).
        self.decode_helpers: ThreadPoolExecutor | None = None
        self.cores = os.cpu_count() or 1
        # One lock per uploaded content: concurrent uploads of the same file add one track.
        self._content_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._register_metrics()

    @property
    def embedder(self) -> Embedder:
        """The loaded model; routes reach it only once `ready_runtime` let them through."""
        if self._embedder is None:
            raise RuntimeError("the model is not loaded")
        return self._embedder

    @property
    def catalog(self) -> CatalogBackend:
        """The open catalogue; routes reach it only once `ready_runtime` let them through."""
        if self._catalog is None:
            raise RuntimeError("the catalogue is not open")
        return self._catalog

    # -- loading -----------------------------------------------------------------------
    def load(self) -> None:
        """Load model and catalogue (blocking). Raises what loading raises."""
        s = self.settings
        start = time.perf_counter()
        embedder = Embedder.from_checkpoint(s.checkpoint, s.device)
        if embedder.device.type == "cpu":
            torch.set_num_threads(s.torch_threads or inference_threads(s.inference_workers))
        catalog = open_catalog(
            s.catalog_target,
            dim=embedder.embed_dim,
            index=s.index_kind,
            device=s.device,
            qdrant_api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
        )
        self._embedder, self._catalog = embedder, catalog
        self._load_calibration()
        self.batcher = self._make_batcher(embedder)
        # Device constants and lazy imports (librosa's filters: about 1 s on the first CPU
        # request) once, before the inference threads share them; then each thread's own.
        embedder.warm_up()
        self.pool.warm_up(embedder.warm_up)
        self.decoder = self._make_decoder(embedder)
        self.decode_helpers = self._make_decode_helpers()
        self._read_checkpoints()
        if self.foreign_checkpoints:
            log.warning("%s", self.checkpoint_mismatch_message())
        log.info(
            "loaded checkpoint %s on %s (cross-request batching %s, decoding in %s) and "
            "catalogue %s in %.1f s",
            embedder.checkpoint_id,
            embedder.device,
            f"up to {self.batcher.max_segments} segments, {1e3 * self.batcher.max_wait_s:g} ms"
            if self.batcher
            else "off",
            (f"{self.decoder.processes} processes" if self.decoder else "the inference threads")
            + (f", in up to {self.max_decode_parts} pieces" if self.max_decode_parts > 1 else ""),
            s.catalog_target,
            time.perf_counter() - start,
        )
        self.state = "ready"

    def _load_calibration(self) -> None:
        """Find the calibration beside the checkpoint; a missing, stale or broken one leaves
        the service uncalibrated (it says so in /readyz and every answer), never failed."""
        from model import DEFAULT_CHECKPOINT

        ckpt_id = self.embedder.checkpoint_id
        checkpoint = self.settings.checkpoint or DEFAULT_CHECKPOINT
        path = calibration_path(checkpoint, ckpt_id)
        try:
            self.calibration = find_calibration(checkpoint, ckpt_id)
        except CalibrationError as err:
            self.calibration, self.calibration_status = None, f"refused: {err}"
            log.warning("calibration %s", self.calibration_status)
            return
        if self.calibration is None:
            self.calibration_status = (
                f"no calibration for checkpoint {ckpt_id} ({path.name} absent): answers carry "
                "no verdict; fit one with `python -m model calibrate`"
            )
            log.warning("%s", self.calibration_status)
        else:
            self.calibration_status = f"loaded {path.name} ({self.calibration.norm} scores)"

    async def load_in_background(self, on_failure: Callable[[BaseException], None] | None) -> None:
        try:
            await asyncio.to_thread(self.load)
        except Exception as err:
            self.state, self.error = "failed", f"{err.__class__.__name__}: {err}"
            log.error("loading the model or the catalogue failed: %s", self.error)
            if on_failure is not None:
                on_failure(err)

    def _make_batcher(self, embedder: Embedder) -> SegmentBatcher | None:
        """The cross-request batcher the settings ask for, or None.

        auto: off, on both devices, as measured. On CPU the encoder is under a tenth of a
        request's time (decoding and features dominate) and batching was no faster
        (bench/bench_service.py). On an H100 with the fused default (bench/device_check.sh,
        2026-11-27) it raised /identify's p99 at 8 clients from 102 to 165 ms and only helped
        when overloaded (32 clients: 71 against 61 req/s), so it is left to `on`. With
        `batch_features` (auto: where `Embedder.selects_in_batches`, CUDA) the batch also
        chooses its requests' segments, in one pass over their audio.
        """
        s, cuda = self.settings, embedder.device.type == "cuda"
        if s.batching != "on":
            return None
        wait_ms = s.batch_max_wait_ms if s.batch_max_wait_ms is not None else 5.0 * cuda
        select = s.batch_features == "on" or (
            s.batch_features == "auto" and embedder.selects_in_batches
        )
        return SegmentBatcher(
            lambda selections, domain: embedder.encode(selections, domain, s.batch_max_segments),
            s.batch_max_segments,
            wait_ms / 1e3,
            select=(lambda ys, domains: embedder.select_many(ys, domains=domains))
            if select
            else None,
            segment_samples=embedder.features.min_samples,
        )

    def _make_decoder(self, embedder: Embedder) -> DecodePool | None:
        """Decoding worker processes, started and warmed now, or None (decode in threads).

        auto: on CUDA only, one per inference worker: there the encoder is cheap and the
        decoding threads' GIL was the limit. On 2 CPU cores processes measured slower
        (bench/bench_indexer.py: 79 against 97 files/s decode-only).
        """
        n = self.settings.decode_processes
        if n is None:
            cores = max(1, (os.cpu_count() or 1) - 1)
            n = min(self.settings.inference_workers, cores) if embedder.device.type == "cuda" else 0
        if n == 0:
            return None
        pool = DecodePool(n)
        pool.warm_up()
        return pool

    @property
    def max_decode_parts(self) -> int:
        return self.settings.decode_parts or self.cores

    def _make_decode_helpers(self) -> ThreadPoolExecutor | None:
        """Threads for the later pieces of an upload decoded in pieces in this process (with
        decoding processes, each worker has its own).

        A 30-s 44.1-kHz FLAC: 36 ms whole, 22 ms in two pieces on 2 cores (same samples).
        """
        if self.decoder is not None or self.max_decode_parts < 2:
            return None
        return ThreadPoolExecutor(self.max_decode_parts - 1, thread_name_prefix="decode")

    def _decode_parts(self) -> int:
        """Pieces for the upload about to be decoded: its fair share of the cores among the
        embeddings running now (this one included, in `pool.running`), at most
        `max_decode_parts`. Under load every core is taken and uploads are decoded whole."""
        share = self.cores // max(1, self.pool.running)
        return max(1, min(self.max_decode_parts, share))

    def close(self) -> None:
        self.pool.shutdown()
        if self.decode_helpers is not None:
            self.decode_helpers.shutdown(cancel_futures=True)
        if self.decoder is not None:
            self.decoder.close()
        if self._catalog is not None:
            self._catalog.close()

    # -- request helpers ---------------------------------------------------------------
    def require_ready(self) -> None:
        if self.state == "loading":
            raise ApiError(
                503,
                "not_ready",
                "the model and catalogue are still loading",
                headers={"Retry-After": "5"},
            )
        if self.state == "failed":
            raise ApiError(503, "load_failed", f"the service failed to load: {self.public_error}")

    @property
    def public_error(self) -> str | None:
        """The load error as clients see it: its class only, unless paths may be shown (the
        message names checkpoint and catalogue files)."""
        if self.error is None or self.settings.expose_paths:
            return self.error
        return f"{self.error.split(':', 1)[0]} (details in the server log)"

    def checkpoint_mismatch_message(self) -> str:
        return (
            f"the catalogue holds vectors computed by checkpoint(s) "
            f"{', '.join(sorted(self.foreign_checkpoints))}, not by the loaded checkpoint "
            f"{self.embedder.checkpoint_id}; scores across checkpoints are meaningless. "
            "Re-embed the catalogue with the loaded checkpoint (python -m indexer --rebuild ...), "
            "remove the stale tracks (python -m indexer remove --checkpoint-id ID, or DELETE "
            "/tracks/ID), or set SINGER_CHECKPOINT to the checkpoint that built it."
        )

    def _read_checkpoints(self) -> None:
        self._checkpoints_read_at = time.monotonic()
        ids = self.catalog.checkpoint_ids()
        self.foreign_checkpoints = ids - {self.embedder.checkpoint_id}

    async def refresh_checkpoints(self, max_age_s: float = 0.0) -> None:
        """Re-read which checkpoints the catalogue holds, if the last read is older."""
        if time.monotonic() - self._checkpoints_read_at >= max_age_s:
            await self.catalog_call(self._read_checkpoints)

    async def require_consistent_catalog(self) -> None:
        """Queries and additions are refused (409) while the catalogue holds vectors of
        another checkpoint: their scores against this model's vectors mean nothing."""
        await self.refresh_checkpoints(CHECKPOINT_RECHECK_S)
        if self.foreign_checkpoints:
            raise ApiError(
                409,
                "checkpoint_mismatch",
                self.checkpoint_mismatch_message(),
                catalog_checkpoints=sorted(self.foreign_checkpoints),
                model_checkpoint=self.embedder.checkpoint_id,
            )

    async def embed(
        self, data: bytes, domain: str, max_seconds: float | None = None
    ) -> TrackEmbedding:
        """Encoded audio -> track embedding, in the bounded inference pool.

        Decoding runs in the pool's thread, or in a decoding process while that thread
        waits; features in the pool's thread; the encoder there too, or in the
        batcher's forward pass shared with concurrent requests. `max_seconds`: longest decoded
        audio (default: the query limit, max_query_seconds). Raises AudioError, and
        DeviceOutOfMemoryError when the device cannot hold the work (the service goes on).
        """
        limit = max_seconds or self.settings.max_query_seconds

        def job() -> TrackEmbedding:
            start = time.perf_counter()
            try:
                emb = self._embed_now(data, domain, limit)
            except torch.OutOfMemoryError as err:
                raise self._out_of_memory(err) from err
            self.metrics.observe(
                "singer_embedding_seconds",
                {"domain": emb.domain or domain},
                time.perf_counter() - start,
            )
            if not np.isfinite(emb.vector).all() or not np.any(emb.vector):
                raise AudioError("the model produced no usable vector for this audio")
            return emb

        return await self.pool.run(job)

    def _decode(self, data: bytes, max_seconds: float) -> np.ndarray:
        """Encoded bytes -> mono float32 waveform at the model's rate, in a decoding process
        when there are some (this thread waits without holding the GIL), else here; in
        pieces over this upload's share of the cores (`_decode_parts`)."""
        sr = self.embedder.features.sample_rate
        parts = self._decode_parts()
        if self.decoder is not None:
            return self.decoder.load_audio(data, sr, max_seconds, parts)
        # No helpers only where max_decode_parts < 2, so parts is 1 there.
        return load_audio(data, sr, max_seconds, parts=parts, executor=self.decode_helpers)

    def _embed_now(self, data: bytes, domain: str, max_seconds: float) -> TrackEmbedding:
        embedder, batcher = self.embedder, self.batcher
        if batcher is None:
            return embedder.embed_audio(self._decode(data, max_seconds), domain)
        batcher.announce()  # a batch being gathered waits for this request
        # With `auto` the segments are chosen here: the branch, and so the batch's forward
        # pass, depends on them.
        in_batch = batcher.select is not None and domain != AUTO
        try:
            y = self._decode(data, max_seconds)
            selection = None if in_batch else embedder.select(y, domain=selection_domain(domain))
        except BaseException:
            batcher.withdraw()
            raise
        if selection is None:  # chosen in the batch, with the other requests'
            selection, segment_vectors = batcher.embed_audio(y, domain, announced=True)
            return TrackEmbedding.of(selection, segment_vectors, domain)
        selection, branch = choose_branch(selection, domain)
        segment_vectors = batcher.embed(selection, branch, announced=True)
        return TrackEmbedding.of(selection, segment_vectors, branch)

    def _out_of_memory(self, err: torch.OutOfMemoryError) -> DeviceOutOfMemoryError:
        device = self.embedder.device
        if device.type == "cuda":
            torch.cuda.empty_cache()  # hand the failed pass's blocks back before the next one
        log.warning("inference device %s out of memory: %s", device, str(err).splitlines()[0])
        return DeviceOutOfMemoryError(
            f"the inference device ({device}) ran out of memory for this request; retry "
            "later, or send a shorter recording"
        )

    def content_lock(self, key: str) -> asyncio.Lock:
        """The lock of one content hash; it lives as long as someone holds or awaits it."""
        lock = self._content_locks.get(key)
        if lock is None:
            lock = self._content_locks[key] = asyncio.Lock()
        return lock

    async def catalog_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A catalogue operation (SQLite/FAISS, blocking) off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)

    async def track_removed(self, track: Track) -> None:
        """Keep the checkpoint check current after a delete (it may remove the last stale one)."""
        if track.checkpoint_id in self.foreign_checkpoints:
            await self.refresh_checkpoints()

    # -- metrics -----------------------------------------------------------------------
    def _register_metrics(self) -> None:
        m = self.metrics
        m.histogram(
            "singer_embedding_seconds",
            "Time to decode and embed one upload (inference thread), by domain.",
        )
        m.gauge(
            "singer_ready",
            "1 when model and catalogue are loaded.",
            lambda: [({}, float(self.state == "ready"))],
        )
        m.gauge(
            "singer_inference_running",
            "Embeddings being computed now.",
            lambda: [({}, float(self.pool.running))],
        )
        m.gauge(
            "singer_inference_waiting",
            "Requests waiting for an inference slot.",
            lambda: [({}, float(self.pool.waiting))],
        )
        m.gauge(
            "singer_encoder_batches",
            "Cross-request encoder passes run (0 while batching is off).",
            lambda: [({}, float(self.batcher.batches if self.batcher else 0))],
        )
        m.gauge(
            "singer_encoder_batched_requests",
            "Requests embedded by those passes (over singer_encoder_batches: mean batch).",
            lambda: [({}, float(self.batcher.batched_requests if self.batcher else 0))],
        )
        m.gauge(
            "singer_catalog_tracks",
            "Tracks in the catalogue, by domain.",
            self._catalog_track_counts,
        )
        m.gauge("singer_catalog_singers", "Singers in the catalogue.", self._catalog_singers)

    def _catalog_stats(self) -> dict:
        return self._catalog.stats() if self._catalog is not None else {}

    def _catalog_track_counts(self):
        stats = self._catalog_stats()
        return [({"domain": d}, float(n)) for d, n in sorted(stats.get("n_tracks", {}).items())]

    def _catalog_singers(self):
        stats = self._catalog_stats()
        return [({}, float(stats["n_singers"]))] if "n_singers" in stats else []
