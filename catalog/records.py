"""The catalogue's records, as returned by every backend."""

from __future__ import annotations

from dataclasses import dataclass


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
