"""Concurrent requests through a `SegmentBatcher`, all announced before any submits."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from model.embedding import TrackEmbedding
from model.features import SegmentSelection
from service.inference import SegmentBatcher


def embed_together(
    batcher: SegmentBatcher, selections: list[SegmentSelection], domains: list[str]
) -> list[TrackEmbedding]:
    """One thread per request; each announces itself, waits for all, then submits, so the
    first to submit leads a batch that waits for every other (within its max_wait)."""

    def request(i: int) -> TrackEmbedding:
        vecs = batcher.embed(selections[i], domains[i], announced=True)
        return TrackEmbedding.of(selections[i], vecs)

    return _together(batcher, request, len(selections))  # type: ignore[return-value]


def embed_audio_together(
    batcher: SegmentBatcher, waveforms: list[np.ndarray], domains: list[str]
) -> list[TrackEmbedding | Exception]:
    """As `embed_together`, each request submitting its waveform (`embed_audio`); a request
    whose waveform is refused gets its error."""

    def request(i: int) -> TrackEmbedding:
        return TrackEmbedding.of(*batcher.embed_audio(waveforms[i], domains[i], announced=True))

    return _together(batcher, request, len(waveforms))


def _together(
    batcher: SegmentBatcher, request: Callable[[int], TrackEmbedding], n: int
) -> list[TrackEmbedding | Exception]:
    got: list[TrackEmbedding | Exception | None] = [None] * n
    announced = threading.Barrier(n)

    def run(i: int) -> None:
        batcher.announce()
        announced.wait()
        try:
            got[i] = request(i)
        except Exception as err:
            got[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(g is not None for g in got), "a request did not finish within 60 s"
    return [g for g in got if g is not None]
