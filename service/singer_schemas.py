"""Response of GET /singers/{id}: a singer and the reliability of their singer models."""

from __future__ import annotations

import math
from typing import Literal

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
    relative_fit: float | None = Field(
        description="fit minus the mean fit of the singer's other tracks: how much worse "
        "than its siblings the track fits (null: the singer's only track there)",
        examples=[-0.02],
    )
    outlier: bool = Field(
        description="far from the singer's other tracks (a wrong label, a featured artist): "
        "its outlier_statistic below the calibration's bar"
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
        description="value of outlier_statistic below which a track is an outlier, from the "
        "calibration (null: uncalibrated, nothing flagged; a singer needs 3 tracks in a "
        "domain before any is)"
    )
    outlier_statistic: Literal["fit", "relative_fit"] | None = Field(
        description="the track field the bar applies to: relative_fit, or fit for a "
        "calibration file older than it (null: uncalibrated)"
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
            outlier_bar=e.bar.outlier_below if e.bar is not None else None,
            outlier_statistic=e.bar.statistic if e.bar is not None else None,
            n_outliers=int(r.outliers.sum()),
            outliers_excluded=excluded and bool(r.outliers.any()),
            tracks=[
                TrackFitOut(
                    id=t.id,
                    title=t.title,
                    path=shown_path(t.path, expose_paths),
                    n_segments=t.n_segments,
                    fit=_rounded(s),
                    relative_fit=_rounded(rel),
                    outlier=bool(o),
                )
                for t, s, rel, o in zip(
                    e.tracks, r.loo_scores, r.relative_fits, r.outliers, strict=True
                )
            ],
        )


class SingerDetail(SingerOut):
    models: list[SingerModelOut] = Field(description="one per domain with tracks")


def _rounded(x: float) -> float | None:
    """A statistic for the answer: 4 decimals, None where undefined (NaN)."""
    return None if math.isnan(x) else round(float(x), 4)
