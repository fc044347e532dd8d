"""Open-set reading of /identify: confidence, verdict, per-segment evidence and timeline.

Blocking catalogue work (run through `Runtime.catalog_call`); the scoring rules are in
`model.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from catalog import CatalogBackend, SingerHit
from model.calibration import Calibration, read_scores, snorm_hits
from model.embedding import TrackEmbedding
from model.vectors import l2_normalize


@dataclass(frozen=True)
class HitReading:
    """Confidence per hit (None without calibration) and the verdict on the best one."""

    confidence: list[float | None]
    verdict: Literal["known", "unknown"] | None
    threshold: float | None


def _scores(
    catalog: CatalogBackend,
    vector: np.ndarray,
    hits: list[SingerHit],
    domain: str,
    cal: Calibration,
) -> np.ndarray:
    """The hits' scores of the kind the calibration was fitted on (raw cosine or s-norm)."""
    raw = np.array([h.score for h in hits], dtype=np.float64)
    if cal.norm == "raw" or not hits:
        return raw
    k = cal.cohort_top_k
    # Query side: its scores against the other singers' models (the hit excluded).
    query_hits = catalog.search_singers(vector, k + 1, domain)
    query_cohort = [
        np.array([q.score for q in query_hits if q.singer.id != h.singer.id]) for h in hits
    ]
    # Model side: the singer model's scores against other singers' tracks.
    model_cohort = []
    for h in hits:
        model = catalog.singer_vector(h.singer.id, domain)
        tracks = catalog.search_tracks(model, k + h.n_tracks, domain) if model is not None else []
        model_cohort.append(
            np.array([t.score for t in tracks if t.track.singer_id != h.singer.id][:k])
        )
    return snorm_hits(raw, query_cohort, model_cohort, k)


def read_hits(
    catalog: CatalogBackend,
    vector: np.ndarray,
    hits: list[SingerHit],
    query_domain: str,
    models_domain: str | None,
    cal: Calibration | None,
    target_fa: float,
    n_segments: int = 1,
) -> HitReading:
    """Confidence and verdict of ranked singer hits; nothing invented without calibration.
    n_segments: how many segments the query vector averages (picks the calibration's length
    tier: a longer query scores higher against every singer)."""
    pair = cal.pair(query_domain, models_domain, n_segments) if cal and models_domain else None
    if cal is None or pair is None or models_domain is None:
        return HitReading([None] * len(hits), None, None)
    scores = _scores(catalog, vector, hits, models_domain, cal)
    reading = read_scores(scores, catalog.n_singers(models_domain), pair, target_fa)
    confidence = [None if np.isnan(c) else float(c) for c in reading.confidence]
    verdict: Literal["known", "unknown"] | None = None
    if reading.verdict is not None:
        verdict = "known" if reading.verdict == "known" else "unknown"
    return HitReading(confidence, verdict, reading.threshold)


@dataclass(frozen=True)
class SegmentEvidence:
    start_s: float
    end_s: float
    singer: str | None
    score: float | None
    confidence: float | None
    known: bool | None  # the segment's best score above the verdict threshold


def segment_evidence(
    catalog: CatalogBackend,
    emb: TrackEmbedding,
    query_domain: str,
    models_domain: str | None,
    cal: Calibration | None,
    target_fa: float,
) -> list[SegmentEvidence]:
    """Best singer of each embedded segment (3 s, voiced), in time order."""
    if emb.segment_vectors is None or emb.starts_s is None or emb.ends_s is None:
        return []
    out = []
    for vec, start, end in zip(emb.segment_vectors, emb.starts_s, emb.ends_s, strict=True):
        best = (
            catalog.search_singers(l2_normalize(np.asarray(vec, np.float32)), 1, models_domain)
            if models_domain and np.any(vec)
            else []
        )
        if not best:
            out.append(SegmentEvidence(float(start), float(end), None, None, None, None))
            continue
        # each window is one segment: read at the one-segment tier
        r = read_hits(catalog, vec, best, query_domain, models_domain, cal, target_fa, 1)
        known = None if r.verdict is None else r.verdict == "known"
        out.append(
            SegmentEvidence(
                float(start), float(end), best[0].singer.name, best[0].score, r.confidence[0], known
            )
        )
    return out


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    singer: str  # a catalogue singer, or "unknown"
    confidence: float | None  # mean confidence of the merged windows
    n_windows: int


def timeline(segments: list[SegmentEvidence]) -> list[Span]:
    """Who sings when: each window's answer (its best singer, "unknown" where the calibrated
    verdict says so), consecutive windows with the same answer merged."""
    spans: list[Span] = []
    confs: list[list[float]] = []
    for seg in segments:
        label = "unknown" if seg.singer is None or seg.known is False else seg.singer
        if spans and spans[-1].singer == label:
            last = spans[-1]
            spans[-1] = Span(last.start_s, seg.end_s, label, None, last.n_windows + 1)
        else:
            spans.append(Span(seg.start_s, seg.end_s, label, None, 1))
            confs.append([])
        if seg.confidence is not None:
            confs[-1].append(seg.confidence)
    return [
        Span(s.start_s, s.end_s, s.singer, float(np.mean(c)) if c else None, s.n_windows)
        for s, c in zip(spans, confs, strict=True)
    ]
