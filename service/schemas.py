"""Response bodies of the HTTP API (they are also the OpenAPI schema at /docs)."""

from __future__ import annotations

import dataclasses
from typing import Literal, cast

from pydantic import BaseModel, Field

from catalog import Singer, SingerHit, Track, TrackHit
from model.embedding import TrackEmbedding

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


class TrackAdded(TrackOut):
    quality: Quality | None = Field(
        None, description="quality of the upload; null when the track was already catalogued"
    )


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


QualityFlag = Literal["low_voice", "short", "clipped", "mostly_accompaniment", "domain_mismatch"]


class Quality(BaseModel):
    """How much to trust an answer, from the voice detector (see service/README.md)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "voiced_fraction": 0.42,
                    "n_segments": 2,
                    "flags": ["low_voice", "mostly_accompaniment", "domain_mismatch"],
                    "domain_score": 0.81,
                }
            ]
        }
    }
    voiced_fraction: float = Field(description="share of the upload's frames heard as singing")
    n_segments: int = Field(description="3-second segments embedded")
    flags: list[QualityFlag] = Field(
        description="low_voice: no segment was 70 % sung, the most sung ones were used; "
        "short: under two segments (6 s) long; clipped: flat-topped peaks; "
        "mostly_accompaniment: declared mono but sounds like a mix; domain_mismatch: the "
        "declared domain disagrees with domain_score"
    )
    domain_score: float | None = Field(
        description="probability that the voice is in a mixture (0: a vocal take, 1: a "
        "finished song); null when no frame was heard as singing"
    )

    @classmethod
    def of(cls, emb: TrackEmbedding) -> Quality:
        score = None if emb.domain_score is None else round(emb.domain_score, 4)
        return cls(
            voiced_fraction=round(emb.voiced_fraction, 4),
            n_segments=emb.n_segments,
            flags=cast(list[QualityFlag], list(emb.flags)),
            domain_score=score,
        )


class QueryInfo(BaseModel):
    domain: Domain = Field(description="domain the query was embedded as")
    n_segments: int = Field(description="3-second segments of the upload that were embedded")
    duration_s: float = Field(description="duration of the decoded upload, seconds")
    checkpoint_id: str
    quality: Quality


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
    413: {"model": ErrorOut, "description": "upload larger than SINGER_MAX_UPLOAD_MB"},
    415: {"model": ErrorOut, "description": "not a decodable audio file (lists the formats)"},
    422: {"model": ErrorOut, "description": "too short, silent, no voiced segment, bad parameter"},
    503: {"model": ErrorOut, "description": "still loading, or too many queued requests"},
}
