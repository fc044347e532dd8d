"""Enrolment quality: how much a singer model rests on, and which of its tracks do not fit.

A singer model is the normalised mean of the singer's track vectors in one domain. A track of
someone else filed under the singer (a wrong label, a featured artist's song) pulls the model
towards that voice, silently. A track's *fit* is its cosine to the normalised mean of the
singer's *other* tracks (leave-one-out): a track of the singer scores like a query of the
singer against their model, another voice like an impostor. Its *relative fit* is its fit
minus the mean fit of the singer's other tracks: how much worse than its siblings it fits.
How well a singer's own songs agree varies from singer to singer (far more for finished
songs than for vocal takes), so one bar on the relative fit transfers to new singers better
than one bar on the fit (docs/open-set.md: a planted song of another singer flagged in 91 %
of draws of finished songs instead of 63 %, at the same share of own songs flagged).

A track is flagged below the bar that the calibration fits per domain on genuine tracks for
a stated false-flag rate (`model.calibration.EnrolmentCalibration`, which also names the
statistic: files older than the relative fit hold a bar on the fit). With fewer than
MIN_TRACKS tracks no track is flagged: two disagreeing tracks do not say which one is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model.calibration import OUTLIER_STATISTICS, EnrolmentCalibration
from model.vectors import l2_normalize

#: Fewest tracks of a singer (in one domain) before a track can be called an outlier.
MIN_TRACKS = 3


def leave_one_out_scores(vectors: np.ndarray) -> np.ndarray:
    """(n,) cosine of each unit track vector (n, dim) to the normalised mean of the others;
    NaN for a singer with one track."""
    v = np.asarray(vectors, dtype=np.float64)
    if len(v) < 2:
        return np.full(len(v), np.nan)
    others = l2_normalize(v.sum(axis=0, keepdims=True) - v)
    return np.einsum("ij,ij->i", v, others)


def relative_fits(loo_scores: np.ndarray) -> np.ndarray:
    """(n,) each track's leave-one-out score minus the mean of the other tracks' (NaN for a
    singer with one track)."""
    s = np.asarray(loo_scores, dtype=np.float64)
    if len(s) < 2:
        return np.full(len(s), np.nan)
    return s - (s.sum() - s) / (len(s) - 1)


def outlier_scores(loo_scores: np.ndarray, statistic: str) -> np.ndarray:
    """(n,) the statistic a bar applies to: "fit" (the leave-one-out scores themselves) or
    "relative_fit" (`relative_fits`)."""
    if statistic == "fit":
        return np.asarray(loo_scores, dtype=np.float64)
    if statistic == "relative_fit":
        return relative_fits(loo_scores)
    raise ValueError(f"unknown outlier statistic {statistic!r} (one of {OUTLIER_STATISTICS})")


def outlier_flags(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """(n,) bool: tracks whose outlier statistic is below `threshold` (None: no threshold,
    nothing flagged), once the singer has MIN_TRACKS tracks."""
    s = np.asarray(scores, dtype=np.float64)
    if threshold is None or len(s) < MIN_TRACKS:
        return np.zeros(len(s), dtype=bool)
    return s < threshold


def model_without(vectors: np.ndarray, leave_out: np.ndarray) -> np.ndarray | None:
    """The singer model (float32 (dim,), unit) of the tracks not in the `leave_out` mask;
    None when every track is left out."""
    keep = np.asarray(vectors, dtype=np.float64)[~np.asarray(leave_out, dtype=bool)]
    if not len(keep):
        return None
    return l2_normalize(keep.sum(axis=0)).astype(np.float32)


@dataclass(frozen=True)
class SingerReliability:
    """How much a singer model (one domain) rests on.

    n_tracks: tracks averaged; voiced_s: embedded singing, seconds (segments x segment
    length); spread: mean of 1 - cosine of each track to the model (0: identical tracks);
    loo_scores: (n,) leave-one-out score (fit) per track, relative_fits: (n,) the same minus
    the other tracks' mean (both NaN with one track); outliers: (n,) bool.
    """

    n_tracks: int
    voiced_s: float
    spread: float
    loo_scores: np.ndarray
    relative_fits: np.ndarray
    outliers: np.ndarray


def reliability(
    vectors: np.ndarray,
    n_segments: Sequence[int],
    segment_s: float,
    threshold: float | None,
    statistic: str = "relative_fit",
) -> SingerReliability:
    """The reliability of the model of tracks `vectors` (n, dim), unit, each of `n_segments`
    embedded segments of `segment_s` seconds; `threshold`: the outlier bar (None: none) on
    `statistic` (`outlier_scores`)."""
    v = np.asarray(vectors, dtype=np.float64)
    if not len(v):
        raise ValueError("a singer model needs at least one track")
    model = l2_normalize(v.sum(axis=0))
    loo = leave_one_out_scores(v)
    return SingerReliability(
        n_tracks=len(v),
        voiced_s=float(np.sum(n_segments) * segment_s),
        spread=float(np.mean(1.0 - v @ model)),
        loo_scores=loo,
        relative_fits=relative_fits(loo),
        outliers=outlier_flags(outlier_scores(loo, statistic), threshold),
    )


class TrackStore(Protocol):
    """What `singer_tracks` reads: a catalogue backend's public methods (`catalog.base`)."""

    def track_ids(
        self,
        *,
        singer: str | None = None,
        checkpoint_id: str | None = None,
        domain: str | None = None,
    ) -> list[int]: ...

    def get_track(self, track_id: int) -> Any: ...

    def get_vector(self, track_id: int) -> np.ndarray: ...


def singer_tracks(
    store: TrackStore, singer: str, domain: str
) -> tuple[list[int], np.ndarray, list[int]]:
    """A singer's tracks in one domain: (ids ascending, unit vectors (n, dim), embedded
    segments of each), read through the catalogue's public methods."""
    ids = store.track_ids(singer=singer, domain=domain)
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32), []
    vectors = np.stack([store.get_vector(i) for i in ids])
    return ids, vectors, [int(store.get_track(i).n_segments) for i in ids]


def flagged_tracks(
    store: TrackStore, singers: Iterable[str], bars: Mapping[str, EnrolmentCalibration]
) -> dict[str, list[int]]:
    """singer -> ids of their tracks flagged as outliers, in each domain with a bar
    (`bars`: domain -> the calibration's outlier bar); singers without any are left out."""
    out: dict[str, list[int]] = {}
    for singer in singers:
        for domain, bar in sorted(bars.items()):
            ids, vectors, _ = singer_tracks(store, singer, domain)
            flags: Sequence[bool] | np.ndarray = (
                outlier_flags(
                    outlier_scores(leave_one_out_scores(vectors), bar.statistic),
                    bar.outlier_below,
                )
                if ids
                else []
            )
            out.setdefault(singer, []).extend(i for i, f in zip(ids, flags, strict=True) if f)
    return {s: ids for s, ids in out.items() if ids}
