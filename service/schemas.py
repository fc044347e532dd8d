"""Response bodies of the HTTP API (they are also the OpenAPI schema at /docs)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, Field

from catalog import Singer, SingerHit, Track, TrackHit

Domain = Literal["mono", "mixed"]
MAX_TOP_K = 100


class TrackOut(BaseModel):
    id: int
    singer: str
    singer_id: int
    domain: Domain
    path: str | None
    title: str | None
    external_id: str | None
    duration_s: float
    n_segments: int
    content_hash: str
    checkpoint_id: str
    created_at: str

    @classmethod
    def of(cls, track: Track) -> TrackOut:
        return cls(**dataclasses.asdict(track))


class TrackHitOut(TrackOut):
    score: float = Field(description="cosine similarity to the query, in [-1, 1]")

    @classmethod
    def of_hit(cls, hit: TrackHit) -> TrackHitOut:
        return cls(**dataclasses.asdict(hit.track), score=hit.score)


class SingerOut(BaseModel):
    id: int
    name: str
    n_tracks: dict[str, int] = Field(description="tracks per domain")

    @classmethod
    def of(cls, singer: Singer) -> SingerOut:
        return cls(id=singer.id, name=singer.name, n_tracks=dict(singer.n_tracks))


class SingerHitOut(BaseModel):
    id: int
    name: str
    score: float = Field(description="cosine similarity to the singer model, in [-1, 1]")
    n_tracks: int = Field(description="tracks averaged into the singer model")

    @classmethod
    def of_hit(cls, hit: SingerHit) -> SingerHitOut:
        return cls(id=hit.singer.id, name=hit.singer.name, score=hit.score, n_tracks=hit.n_tracks)


class QueryInfo(BaseModel):
    domain: Domain = Field(description="domain the query was embedded as")
    n_segments: int = Field(description="3-second segments of the upload that were embedded")
    duration_s: float = Field(description="duration of the decoded upload, seconds")
    checkpoint_id: str


class IdentifyResponse(QueryInfo):
    models_domain: Domain | None = Field(
        description="domain of the singer models ranked (None: the catalogue is empty)"
    )
    singers: list[SingerHitOut]


class SearchResponse(QueryInfo):
    target: Literal["mono", "mixed", "any"]
    tracks: list[TrackHitOut]


class SingersPage(BaseModel):
    total: int
    offset: int
    limit: int
    singers: list[SingerOut]


class ErrorOut(BaseModel):
    detail: str | list
    code: str


class Ready(BaseModel):
    status: str
    checkpoint_id: str
    device: str
    catalog: dict


# Documented on every endpoint that takes an upload.
UPLOAD_ERRORS = {
    400: {"model": ErrorOut, "description": "malformed multipart body (code malformed_body)"},
    408: {"model": ErrorOut, "description": "body not received within SINGER_BODY_TIMEOUT_S"},
    413: {"model": ErrorOut, "description": "upload larger than SINGER_MAX_UPLOAD_MB"},
    415: {"model": ErrorOut, "description": "not a decodable audio file (lists the formats)"},
    422: {
        "model": ErrorOut,
        "description": "too short, too long, silent, no voiced segment, NaN/Inf samples, "
        "unsupported sample rate or channels, bad parameter",
    },
    503: {
        "model": ErrorOut,
        "description": "still loading, too many queued requests, or too many uploads being "
        "received",
    },
}
