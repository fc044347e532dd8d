"""What embedding a recording gives: its track vector, and the segments it is the mean of."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.segment_selection import SegmentSelection
from model.vectors import normalized_mean


@dataclass
class TrackEmbedding:
    """A track's singer vector and the segment embeddings it is the mean of.

    vector: float32 (embed_dim,), L2-normalised; segment_vectors: float32 (n_segments,
    embed_dim), what `Embedder.encode` gives (raw encoder outputs, or fused unit vectors);
    starts_s / ends_s / voice: (n_segments,) as in `SegmentSelection`; voiced_fraction in
    [0, 1]; duration_s in seconds; flags and domain_score: the selection's quality
    (`SegmentSelection`); domain: the encoder branch that embedded it, where known (a query
    declared `auto` learns it here).
    """

    vector: np.ndarray
    n_segments: int
    duration_s: float
    segment_vectors: np.ndarray | None = None
    starts_s: np.ndarray | None = None
    ends_s: np.ndarray | None = None
    voice: np.ndarray | None = None
    voiced_fraction: float = 1.0
    flags: tuple[str, ...] = ()
    domain_score: float | None = None
    domain: str | None = None

    @classmethod
    def of(
        cls, selection: SegmentSelection, segment_vectors: np.ndarray, domain: str | None = None
    ) -> TrackEmbedding:
        """The track embedding of a selection and its (n, embed_dim) segment embeddings, made
        by the `domain` branch."""
        return cls(
            vector=track_vector(segment_vectors),
            n_segments=len(segment_vectors),
            duration_s=selection.duration_s,
            segment_vectors=segment_vectors,
            starts_s=selection.starts_s,
            ends_s=selection.ends_s,
            voice=selection.voice,
            voiced_fraction=selection.voiced_fraction,
            flags=selection.flags,
            domain_score=selection.domain_score,
            domain=domain,
        )


def track_vector(segment_embeddings: np.ndarray) -> np.ndarray:
    """(n, dim) segment embeddings -> (dim,) L2-normalised mean (the paper's track vector)."""
    return normalized_mean(segment_embeddings)
