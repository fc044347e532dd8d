"""Embedding many files: decoding threads (or processes) feed `Embedder.embed_batch`.

Worker threads decode, resample and, on the CPU, choose each file's segments (or hand that
to the worker processes of a `model.decode_pool.DecodePool`); an encoder thread runs
`embed_batch` on the files gathered since its last batch, so the next batch is gathered
while one is encoded.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from model.audio import AudioSource, load_audio
from model.concurrency import completed_in_threads
from model.decode_pool import DecodePool
from model.devices import batch_segments
from model.errors import AudioError
from model.segment_selection import SegmentSelection
from model.track_embedding import TrackEmbedding

if TYPE_CHECKING:
    from model.embedding import Embedder

# (index into the sources, the file's embedding or its error).
Result = tuple[int, TrackEmbedding | AudioError]


def embed_many(
    embedder: Embedder,
    sources: Sequence[AudioSource],
    domain: str,
    all_segments: bool = False,
    workers: int = 2,
    batch_size: int | None = None,
    progress: bool = False,
    max_seconds: float | None = None,
    pool: DecodePool | None = None,
) -> Iterator[Result]:
    """Embed many files; yields (index into sources, result or AudioError) as they finish.

    Decoding, features and voice detection run in `workers` threads with a bounded queue
    (on CUDA, decoding only: `embed_batch` chooses the segments of several files at once);
    the files are embedded together, `embed_batch` over about `batch_size` segments (None:
    `model.devices.batch_segments` of the model's device), in a
    thread of their own. Results come in completion order, not input order, and a prepared
    file waits until `batch_size` segments are buffered (or the input ends): use the index
    to place each result. In memory at once: the files in flight, the batch being gathered
    and the one being encoded. On CPU, give torch `inference_threads(workers)` threads so
    decoding and inference do not oversubscribe the cores. Never raises AudioError: a bad
    file comes back as its error, so batch jobs can skip and report it. `max_seconds` bounds
    each file's decoded duration. `pool`: decode in its worker processes instead (and choose
    segments there too when it was made with features); `workers` threads then wait on
    them, at least one per process.
    """
    from tqdm import tqdm

    sr = embedder.features.sample_rate
    batch_size = batch_size or batch_segments(embedder.device)
    in_workers = pool is not None and pool.features is not None
    # On CUDA, waveforms come back from the threads and the encoder thread chooses their
    # segments many at a time, beside the encoder (`selects_in_batches`).
    batch_select = embedder.selects_in_batches and not in_workers
    bar = tqdm(total=len(sources), unit="file", disable=not progress)

    def name(i: int) -> str | None:
        return None if isinstance(sources[i], bytes) else str(sources[i])

    def run(batch: list[tuple[int, np.ndarray | SegmentSelection]]) -> list[Result]:
        got = embedder.embed_batch(
            [item for _, item in batch],
            domain,
            all_segments=all_segments,
            names=[name(i) for i, _ in batch],
            batch_size=batch_size,
        )
        return [(i, r) for (i, _), r in zip(batch, got, strict=True)]

    def finished(batch: cf.Future[list[Result]]) -> Iterator[Result]:
        for item in batch.result():  # raises what the batch raised (not AudioError)
            bar.update(1)
            yield item

    def prepare(i: int) -> SegmentSelection | np.ndarray:
        # On the CPU, features and voice detection run here, in parallel threads. On CUDA,
        # one recording at a time in the consuming thread, they held indexing to 41 % of
        # the decode-only rate on a 16-core GPU machine: there they run in batches.
        if in_workers and pool is not None:
            return pool.select(sources[i], all_segments, max_seconds, domain)
        if pool is not None:
            y = pool.load_audio(sources[i], sr, max_seconds)
        else:
            y = load_audio(sources[i], sr, max_seconds)
        return y if batch_select else embedder.select(y, all_segments, name(i), domain)

    threads = max(workers, pool.processes if pool is not None else 0)
    gathered: list[tuple[int, np.ndarray | SegmentSelection]] = []
    n_buffered = 0  # segments gathered (for waveforms: at most this many)
    encoding: cf.Future[list[Result]] | None = None  # the batch in the encoder thread
    # One encoder thread: with the encoder in the thread that gathers, the decoders stopped
    # once `lookahead` files were ready while a batch ran on the GPU.
    with cf.ThreadPoolExecutor(1, thread_name_prefix="encoder") as encoder:
        for i, fut in completed_in_threads(prepare, range(len(sources)), workers=threads):
            if encoding is not None and encoding.done():
                yield from finished(encoding)
                encoding = None
            try:
                got = fut.result()
            except AudioError as err:
                bar.update(1)
                yield i, err
                continue
            gathered.append((i, got))
            if isinstance(got, np.ndarray):
                n_buffered += max(1, len(got) // embedder.features.min_samples)
            else:
                n_buffered += len(got)
            if n_buffered >= batch_size:
                if encoding is not None:  # one batch encodes while the next gathers
                    yield from finished(encoding)
                encoding = encoder.submit(run, gathered)
                gathered, n_buffered = [], 0
        if encoding is not None:
            yield from finished(encoding)
        if gathered:
            yield from finished(encoder.submit(run, gathered))
    bar.close()
