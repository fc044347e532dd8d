"""Concurrent requests through a `SegmentBatcher`, all announced before any submits."""

from __future__ import annotations

import threading

from model.embedding import TrackEmbedding
from model.features import SegmentSelection
from service.inference import SegmentBatcher


def embed_together(
    batcher: SegmentBatcher, selections: list[SegmentSelection], domains: list[str]
) -> list[TrackEmbedding]:
    """One thread per request; each announces itself, waits for all, then submits, so the
    first to submit leads a batch that waits for every other (within its max_wait)."""
    got: list[TrackEmbedding | None] = [None] * len(selections)
    announced = threading.Barrier(len(selections))

    def request(i: int) -> None:
        batcher.announce()
        announced.wait()
        vecs = batcher.embed(selections[i].features, domains[i], announced=True)
        got[i] = TrackEmbedding.of(selections[i], vecs)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(selections))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return got
