"""Typed answers of the API, mirroring service/schemas.py (never imported: the client stands
alone). Fields the service adds later are kept, not refused (`model_extra`), so an older
client still reads a newer service's answers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Track(_Answer):
    """A catalogued track. `path`: the indexed file's name (its server path only where the
    operator exposes paths); None for an upload."""

    id: int
    singer: str
    singer_id: int
    domain: str  # "mono" (vocals only) or "mixed" (a finished song)
    path: str | None = None
    title: str | None = None
    external_id: str | None = None
    duration_s: float
    n_segments: int
    content_hash: str
    checkpoint_id: str
    created_at: str
    playable: bool | None = None  # whether GET /tracks/{id}/audio can serve it now


class Quality(_Answer):
    """How much to trust an answer, from the service's voice detector."""

    voiced_fraction: float
    n_segments: int
    flags: list[str] = Field(default_factory=list)
    domain_score: float | None = None


class AddedTrack(Track):
    """POST /tracks: the track; `created` False when the same content was already filed
    under this singer and domain (the existing track, `quality` None)."""

    quality: Quality | None = None
    created: bool = True


class TrackHit(Track):
    score: float  # cosine similarity to the query, in [-1, 1]


class Singer(_Answer):
    id: int
    name: str
    n_tracks: dict[str, int] = Field(default_factory=dict)  # tracks per domain


class SingerHit(_Answer):
    id: int
    name: str
    score: float
    confidence: float | None = None  # calibrated probability, None when uncalibrated
    n_tracks: int


class Segment(_Answer):
    """One embedded 3-s segment of the upload and the singer it matched best."""

    start_s: float
    end_s: float
    singer: str | None = None
    score: float | None = None


class Span(_Answer):
    """Consecutive segments with the same answer (with `timeline=True`)."""

    start_s: float
    end_s: float
    singer: str
    confidence: float | None = None
    n_windows: int


class _Query(_Answer):
    domain: str  # the branch the upload was embedded as
    requested_domain: str
    n_segments: int
    duration_s: float
    checkpoint_id: str
    quality: Quality


class Identification(_Query):
    """POST /identify: the catalogue's singers ranked for the upload."""

    models_domain: str | None = None
    singers: list[SingerHit]
    # "known", "likely" (at the looser operating point), "unknown", or None (uncalibrated)
    verdict: str | None = None
    calibrated: bool = False
    threshold: float | None = None  # score the best singer had to exceed for "known"
    likely_threshold: float | None = None  # ... and for "likely"
    target_false_alarm: float
    likely_false_alarm: float | None = None
    singing_s: float | None = None  # singing the answer rests on, seconds
    firm_answer_s: float | None = None  # about how much singing a firm answer needs, seconds
    voiced_fraction: float
    segments: list[Segment] = Field(default_factory=list)
    timeline: list[Span] | None = None


class SearchPage(_Query):
    """POST /search: one page of tracks ranked for the upload; `next_cursor` None on the
    last page."""

    target: str
    searched: str
    note: str | None = None
    tracks: list[TrackHit]
    next_cursor: str | None = None


class TrackFit(_Answer):
    """How one track fits the singer's other tracks (GET /singers/{id})."""

    id: int
    title: str | None = None
    path: str | None = None
    n_segments: int
    fit: float | None = None  # cosine to the model of the other tracks; None: the only one
    relative_fit: float | None = None  # fit minus the other tracks' mean fit
    outlier: bool  # below the calibration's bar: a wrong label, a featured artist


class SingerModel(_Answer):
    """The reliability of one domain's singer model."""

    domain: str
    n_tracks: int
    voiced_minutes: float
    spread: float  # mean of 1 - cosine of each track to the model
    outlier_bar: float | None = None  # None: uncalibrated, nothing flagged
    outlier_statistic: str | None = None  # the TrackFit field the bar applies to
    n_outliers: int
    outliers_excluded: bool  # whether /identify ranks the singer without them
    tracks: list[TrackFit] = Field(default_factory=list)


class SingerDetail(Singer):
    """GET /singers/{id}: a singer and the reliability of their models, one per domain."""

    models: list[SingerModel] = Field(default_factory=list)


class SingersPage(_Answer):
    total: int
    offset: int
    limit: int
    singers: list[Singer]


class TracksPage(_Answer):
    tracks: list[Track]
    next_after: int | None = None


class Readiness(_Answer):
    """GET /readyz once the service is loaded."""

    status: str
    checkpoint_id: str
    device: str
    catalog: dict = Field(default_factory=dict)
    calibrated: bool = False
    calibration: str = ""
