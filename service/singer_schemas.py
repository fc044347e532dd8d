"""Response of GET /singers/{id}: a singer and the reliability of their singer models."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from service.enrolment import DomainEnrolment
from service.schemas import Domain, SingerOut, shown_path


class TrackFitOut(BaseModel):
    """How one track fits the singer's other tracks."""

    id: int
    title: str | None
    path: str | None = Field(description="the indexed file, shown as in GET /tracks")
    n_segments: int
    fit: float | None = Field(
        description="cosine of the track to the model of the singer's other tracks in its "
        "domain (null: the singer's only track there)",
        examples=[0.71],
    )
    outlier: bool = Field(
        description="far from the singer's other tracks (a wrong label, a featured artist): "
        "fit below the calibration's bar"
    )


class SingerModelOut(BaseModel):
    """The reliability of one domain's singer model."""

    domain: Domain
    n_tracks: int = Field(description="tracks averaged into the model")
    voiced_minutes: float = Field(
        description="singing the model rests on: embedded voiced segments x 3 s, minutes"
    )
    spread: float = Field(
        description="mean of 1 - cosine of each track to the model: 0 for identical tracks; "
        "a wide spread makes a model that scores every voice alike",
        examples=[0.21],
    )
    outlier_bar: float | None = Field(
        description="fit below which a track is an outlier, from the calibration (null: "
        "uncalibrated, nothing flagged; a singer needs 3 tracks in a domain before any is)"
    )
    n_outliers: int
    outliers_excluded: bool = Field(
        description="whether /identify ranks this singer without the outliers "
        "(SINGER_EXCLUDE_OUTLIERS)"
    )
    tracks: list[TrackFitOut]

    @classmethod
    def of(
        cls,
        e: DomainEnrolment,
        excluded: bool,
        expose_paths: bool = False,
    ) -> SingerModelOut:
        r = e.reliability
        return cls(
            domain=e.domain,
            n_tracks=r.n_tracks,
            voiced_minutes=round(r.voiced_s / 60.0, 2),
            spread=round(r.spread, 4),
            outlier_bar=e.outlier_below,
            n_outliers=int(r.outliers.sum()),
            outliers_excluded=excluded and bool(r.outliers.any()),
            tracks=[
                TrackFitOut(
                    id=t.id,
                    title=t.title,
                    path=shown_path(t.path, expose_paths),
                    n_segments=t.n_segments,
                    fit=None if math.isnan(s) else round(float(s), 4),
                    outlier=bool(o),
                )
                for t, s, o in zip(e.tracks, r.loo_scores, r.outliers, strict=True)
            ],
        )


class SingerDetail(SingerOut):
    models: list[SingerModelOut] = Field(description="one per domain with tracks")
