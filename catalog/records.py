"""The catalogue's records, as returned by every backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Track:
    id: int
    singer: str
    singer_id: int
    domain: str  # "mono" | "mixed"
    path: str | None
    title: str | None
    external_id: str | None
    duration_s: float
    n_segments: int
    content_hash: str  # hex SHA-256 of the encoded file
    checkpoint_id: str  # which weights computed the vector
    created_at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Singer:
    id: int
    name: str
    n_tracks: dict[str, int]  # per domain, both domains always present


@dataclass(frozen=True)
class TrackHit:
    track: Track
    score: float  # cosine similarity


@dataclass(frozen=True)
class SingerHit:
    singer: Singer
    score: float  # cosine similarity to the singer model
    domain: str  # domain of the singer model
    n_tracks: int  # tracks averaged into that model


@dataclass(frozen=True)
class StoredTrack:
    """A track with its vector, as exported, imported and copied between generations."""

    track: Track
    vector: np.ndarray  # float32 (dim,), L2-normalised


@dataclass(frozen=True)
class GenerationInfo:
    """Which generation of a catalogue location a handle serves (see catalog/base.py).

    `name` is "" for a catalogue never migrated; `checkpoint_id` / `checkpoint_file` are
    the checkpoint a migration built it with (None where nothing was recorded)."""

    name: str = ""
    checkpoint_id: str | None = None
    checkpoint_file: str | None = None
    retired: bool = False  # a migration made another generation live
