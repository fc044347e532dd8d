"""An upload's bytes -> its `TrackEmbedding`: the service's one path from audio to vector.

Each upload is decoded (in a decoding process when there are some, else in its inference
thread, in pieces over its share of idle cores) and embedded alone by the model's embedding
primitive (`Embedder.embed_batch`, as the indexer and `embed_file` are), in the bounded
inference pool; on the CPU its features, voice detection and encoders run in fixed pieces,
at once on the idle cores its torch threads leave, one after another under load. How many
processes, pieces and threads: see `service.performance`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from model.audio import load_audio
from model.concurrency import Split
from model.decode_pool import DecodePool
from model.embedding import Embedder, TrackEmbedding
from model.errors import AudioError
from service import performance
from service.inference import DeviceOutOfMemoryError, InferencePool
from service.settings import Settings

log = logging.getLogger(__name__)


class UploadEmbedder:
    """Embeds uploads with `embedder`, at most `inference_workers` at once (see
    `InferencePool`); `observe(domain, seconds)` is told each embedding's time."""

    def __init__(
        self, embedder: Embedder, settings: Settings, observe: Callable[[str, float], None]
    ):
        self.embedder = embedder
        self.max_query_seconds = settings.max_query_seconds
        self.observe = observe
        perf, workers = settings.performance, settings.inference_workers
        # Torch threads per run on the CPU (None on a GPU: its segments are one pass there).
        self.threads: int | None = None
        if embedder.device.type == "cpu":
            self.threads = performance.torch_threads(perf, workers)
            torch.set_num_threads(self.threads)
        self.pool = InferencePool(workers, settings.max_pending)
        # Device constants and lazy imports (librosa's filters: about 1 s on the first CPU
        # request) once, before the inference threads share them; then each thread's own.
        embedder.warm_up()
        self.pool.warm_up(embedder.warm_up)
        self.max_decode_parts = performance.max_decode_parts(perf)
        processes = performance.decode_processes(perf, workers, embedder.device)
        self.decoder: DecodePool | None = None
        if processes:
            self.decoder = DecodePool(processes)
            self.decoder.warm_up()
        # Threads that decode the later pieces of an upload while its inference thread
        # decodes the first (decoding processes have their own), and on the CPU run pieces
        # of its features, detector and encoders beside it while cores are idle (`_split`).
        self.decode_helpers: ThreadPoolExecutor | None = None
        if self.decoder is None and self.max_decode_parts > 1:
            self.decode_helpers = ThreadPoolExecutor(
                self.max_decode_parts - 1, thread_name_prefix="decode"
            )
        # The pieces of every upload's model work: an idle machine's, whatever the load.
        self.model_pieces = 1
        if self.threads is not None and self.decode_helpers is not None:
            self.model_pieces = performance.model_parts(self.max_decode_parts, self.threads)

    def describe(self) -> str:
        """Where uploads are decoded, for the start-up log."""
        where = f"{self.decoder.processes} processes" if self.decoder else "the inference threads"
        parts = self.max_decode_parts
        return where + (f", in up to {parts} pieces" if parts > 1 else "")

    async def embed(
        self, data: bytes, domain: str, max_seconds: float | None = None
    ) -> TrackEmbedding:
        """Encoded audio -> track embedding. `max_seconds`: longest decoded audio (default:
        the query limit). Raises AudioError (a 4xx), OverloadedError when too many wait, and
        DeviceOutOfMemoryError when the device cannot hold the work (the service goes on)."""
        limit = max_seconds or self.max_query_seconds

        def job() -> TrackEmbedding:
            start = time.perf_counter()
            parts = performance.decode_parts(self.max_decode_parts, self.pool.running)
            try:
                y = self._decode(data, limit, parts)
                (emb,) = self.embedder.embed_batch([y], domain, split=self._split(parts))
            except torch.OutOfMemoryError as err:
                raise self._out_of_memory(err) from err
            if isinstance(emb, AudioError):  # too short, no singing, no usable vector
                raise emb
            self.observe(emb.domain or domain, time.perf_counter() - start)
            return emb

        return await self.pool.run(job)

    def _split(self, parts: int) -> Split | None:
        """How this upload's features, detector and encoders run, its share of the cores
        being `parts`: always in `model_pieces`, so an upload gets the same answer, bit for
        bit, under any load; at once on the helper threads while its share has the cores,
        else one after another here. None (one piece) on a GPU or without helpers."""
        if self.model_pieces < 2 or self.threads is None:
            return None
        now = performance.model_parts(parts, self.threads) >= 2
        return Split(self.model_pieces, self.decode_helpers if now else None)

    def _decode(self, data: bytes, max_seconds: float, parts: int) -> np.ndarray:
        """Encoded bytes -> mono float32 waveform at the model's rate, decoded in up to
        `parts` pieces (this thread waits without holding the GIL while a decoding process
        works)."""
        sr = self.embedder.features.sample_rate
        if self.decoder is not None:
            return self.decoder.load_audio(data, sr, max_seconds, parts)
        # No helpers only where max_decode_parts < 2, so parts is 1 there.
        return load_audio(data, sr, max_seconds, parts=parts, executor=self.decode_helpers)

    def _out_of_memory(self, err: torch.OutOfMemoryError) -> DeviceOutOfMemoryError:
        device = self.embedder.device
        if device.type == "cuda":
            torch.cuda.empty_cache()  # hand the failed pass's blocks back before the next one
        log.warning("inference device %s out of memory: %s", device, str(err).splitlines()[0])
        return DeviceOutOfMemoryError(
            f"the inference device ({device}) ran out of memory for this request; retry "
            "later, or send a shorter recording"
        )

    def close(self) -> None:
        self.pool.shutdown()
        if self.decode_helpers is not None:
            self.decode_helpers.shutdown(cancel_futures=True)
        if self.decoder is not None:
            self.decoder.close()
