"""Response bodies of the HTTP API (they are also the OpenAPI schema at /docs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from catalog import Singer, SingerHit, Track, TrackHit
from model.embedding import TrackEmbedding

Domain = Literal["mono", "mixed"]
# A query's domain as a request may give it: auto leaves the branch to the voice detector
# (model.domains.choose_branch).
QueryDomain = Literal["mono", "mixed", "auto"]
MAX_TOP_K = 100


def shown_path(
    path: str | None, expose_paths: bool = False, display: Callable[[str], str] | None = None
) -> str | None:
    """A track's file as answers show it, never where it lies on the server (issue 39): its
    path relative to the indexed folder holding it (`display`, e.g.
    `AudioFiles.display_path`), else its name; the full path only when the operator allows
    it (SINGER_EXPOSE_PATHS)."""
    if path is None or expose_paths:
        return path
    return display(path) if display is not None else PurePath(path).name


class TrackOut(BaseModel):
    id: int
    singer: str
    singer_id: int
    domain: Domain
    path: str | None = Field(
        description="the indexed file: its path relative to the folder indexed (or its "
        "name), the full server path only with SINGER_EXPOSE_PATHS=true; null for an upload"
    )
    title: str | None
    external_id: str | None
    duration_s: float
    n_segments: int
    content_hash: str
    checkpoint_id: str
    created_at: str
    playable: bool | None = Field(
        None, description="GET /tracks/{id}/audio can serve the track's audio now"
    )
    audio_unavailable: Literal["gone", "outside_roots", "not_stored"] | None = Field(
        None,
        description="why GET /tracks/{id}/audio cannot serve it: gone (the file is no longer "
        "where it was indexed), outside_roots (it lies outside the indexed folders and "
        "SINGER_AUDIO_ROOTS), not_stored (an upload whose audio was not kept); null when it "
        "can, or when not known",
    )

    @classmethod
    def of(
        cls,
        track: Track,
        playable: bool | None = None,
        *,
        unavailable: str | None = None,
        expose_paths: bool = False,
        display: Callable[[str], str] | None = None,
    ) -> TrackOut:
        """`unavailable`: why it cannot be played (`AudioFiles.unavailable`)."""
        fields = dataclasses.asdict(track)
        fields["path"] = shown_path(track.path, expose_paths, display)
        return cls(**fields, playable=playable, audio_unavailable=unavailable)


class TrackAdded(TrackOut):
    quality: Quality | None = Field(
        None, description="quality of the upload; null when the track was already catalogued"
    )


class TrackHitOut(TrackOut):
    score: float = Field(description="cosine similarity to the query, in [-1, 1]")

    @classmethod
    def of_hit(
        cls,
        hit: TrackHit,
        playable: bool | None = None,
        *,
        unavailable: str | None = None,
        expose_paths: bool = False,
        display: Callable[[str], str] | None = None,
    ) -> TrackHitOut:
        fields = dataclasses.asdict(hit.track)
        fields["path"] = shown_path(hit.track.path, expose_paths, display)
        return cls(**fields, score=hit.score, playable=playable, audio_unavailable=unavailable)


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
    confidence: float | None = Field(
        None,
        description="calibrated probability that this singer is the one singing, in [0, 1]; "
        "null when the service has no calibration for its checkpoint",
        examples=[0.87],
    )
    n_tracks: int = Field(description="tracks averaged into the singer model")

    @classmethod
    def of_hit(cls, hit: SingerHit, confidence: float | None = None) -> SingerHitOut:
        return cls(
            id=hit.singer.id,
            name=hit.singer.name,
            score=hit.score,
            confidence=confidence,
            n_tracks=hit.n_tracks,
        )


class SegmentOut(BaseModel):
    """Evidence: one embedded 3-s segment of the upload and the singer it matched best."""

    start_s: float = Field(description="start in the upload, seconds", examples=[12.1])
    end_s: float = Field(description="end in the upload, seconds", examples=[15.1])
    singer: str | None = Field(description="best singer of this segment (null: empty catalogue)")
    score: float | None = Field(description="cosine similarity of the segment to that singer")


class SpanOut(BaseModel):
    """Timeline: consecutive segments with the same answer, merged."""

    start_s: float = Field(examples=[0.0])
    end_s: float = Field(examples=[24.2])
    singer: str = Field(
        description="best singer of these segments, or 'unknown' where the calibrated verdict "
        "says the voice is not in the catalogue",
        examples=["amy"],
    )
    confidence: float | None = Field(
        description="mean calibrated confidence of the best singer over the span (null: "
        "uncalibrated)",
        examples=[0.62],
    )
    n_windows: int = Field(description="3-s segments merged into the span")


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
        "mostly_accompaniment: declared mono (or auto) but sounds like a mix; "
        "domain_mismatch: the declared domain disagrees with domain_score (never with auto)"
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
    domain: Domain = Field(
        description="domain the query was embedded as: the requested one, or with "
        "`domain=auto` the one the voice detector chose"
    )
    requested_domain: QueryDomain = Field(description="the request's `domain`")
    n_segments: int = Field(description="3-second segments of the upload that were embedded")
    duration_s: float = Field(description="duration of the decoded upload, seconds")
    checkpoint_id: str
    quality: Quality

    @staticmethod
    def of(emb: TrackEmbedding, requested: str, checkpoint_id: str) -> dict[str, Any]:
        """The fields of this base for a query embedded as `emb` (`emb.domain`: the branch),
        asked as `requested`, as keyword arguments of a subclass."""
        return {
            "domain": emb.domain,
            "requested_domain": requested,
            "n_segments": emb.n_segments,
            "duration_s": emb.duration_s,
            "checkpoint_id": checkpoint_id,
            "quality": Quality.of(emb),
        }


class IdentifyResponse(QueryInfo):
    models_domain: Domain | None = Field(
        description="domain of the singer models ranked (None: the catalogue is empty)"
    )
    singers: list[SingerHitOut]
    verdict: Literal["known", "likely", "unknown"] | None = Field(
        None,
        description="'known': the best singer's score clears the threshold set for the target "
        "false-alarm rate; 'likely': it clears the looser one (SINGER_LIKELY_FALSE_ALARM); "
        "'unknown': the singer is probably not in the catalogue, or the query holds too little "
        "singing to tell (see firm_answer_s); null: no calibration for this checkpoint (see "
        "`calibrated`) or an empty catalogue",
        examples=["known"],
    )
    likely_threshold: float | None = Field(
        None, description="score the best singer had to exceed for a 'likely' verdict"
    )
    likely_false_alarm: float | None = Field(
        None, description="looser operating point (SINGER_LIKELY_FALSE_ALARM)", examples=[0.10]
    )
    singing_s: float = Field(
        description="singing the answer rests on: embedded voiced segments x 3 s", examples=[24.0]
    )
    firm_answer_s: float | None = Field(
        None,
        description="about how much singing a firm answer needs: the query length beyond "
        "which the calibration's queries by catalogue singers were hardly more often answered "
        "'known' (null: not calibrated, or no length gives firm answers for these domains)",
        examples=[18.0],
    )
    calibrated: bool = Field(
        False, description="whether a calibration for the loaded checkpoint is in use"
    )
    threshold: float | None = Field(
        None,
        description="score the best singer had to exceed for a 'known' verdict; it rises with "
        "the catalogue's singers and the upload's n_segments (a longer query scores higher "
        "against everyone)",
    )
    target_false_alarm: float = Field(
        description="operating point (SINGER_TARGET_FALSE_ALARM)", examples=[0.01]
    )
    voiced_fraction: float = Field(
        description="share of the upload's frames that are voiced, in [0, 1]", examples=[0.83]
    )
    segments: list[SegmentOut] = Field(
        default_factory=list, description="evidence: each embedded segment, in time order"
    )
    timeline: list[SpanOut] | None = Field(
        None, description="who sings when (only with timeline=true)"
    )


class SearchResponse(QueryInfo):
    target: Literal["mono", "mixed", "any"]
    searched: Literal["mono", "mixed", "any"] = Field(
        description="domain actually searched: the other one when `target` holds no track"
    )
    note: str | None = Field(
        None,
        description="why the answer differs from the request (fallback) or is empty",
        examples=["the catalogue holds no mixed track; searched the mono tracks instead"],
    )
    tracks: list[TrackHitOut]
    next_cursor: str | None = Field(
        None,
        description="opaque cursor of the next page: repeat the request (same file and "
        "parameters) with cursor=<this>; null on the last page",
    )


class SingersPage(BaseModel):
    total: int
    offset: int
    limit: int
    singers: list[SingerOut]


class TracksPage(BaseModel):
    tracks: list[TrackOut]
    next_after: int | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )


class FieldError(BaseModel):
    """One problem with one parameter or form field."""

    loc: list[str | int] = Field(
        description="where: ['query' | 'body' | 'path' | 'header', name]",
        examples=[["body", "domian"]],
    )
    msg: str = Field(examples=["not a field of this endpoint; did you mean `domain`?"])
    type: str = Field(description="kind of problem, e.g. missing, unknown, repeated")
    input: str | int | float | bool | None = Field(
        None, description="the value given, when it is a short scalar"
    )


class ErrorOut(BaseModel):
    """Every error answer (4xx, 5xx) has this shape; some codes add fields of their own
    (e.g. `supported_formats`, `duration_s`, `track_id`, `max_upload_bytes`)."""

    model_config = ConfigDict(extra="allow")
    detail: str = Field(description="what went wrong, for people")
    code: str = Field(description="stable machine-readable code (service/README.md, Errors)")
    errors: list[FieldError] = Field(
        default_factory=list, description="per-field problems; empty when not about fields"
    )


class Ready(BaseModel):
    status: str
    checkpoint_id: str
    device: str
    catalog: dict
    calibrated: bool = Field(description="whether /identify gives calibrated verdicts")
    calibration: str = Field(description="which calibration is in use, or why none is")


# Documented on every endpoint (service.errors.install_error_handlers): every API route
# refuses unknown, repeated or out-of-range parameters.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorOut,
        "description": "invalid parameters (code invalid_parameters): out of range, missing, "
        "given twice, or one the endpoint does not take; `errors` names each",
    },
}

# Documented on every endpoint that takes an upload.
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
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
