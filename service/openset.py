"""Open-set reading of /identify: confidence, graded verdict, evidence and timeline.

Blocking catalogue work (run through `Runtime.catalog_call`); the scoring rules are in
`model.calibration` and `model.score_norm`. Where a pair is scored with s-norm
(`Calibration.norm_of`), the cohort of each side is the catalogue's other singers joined by
the voices shipped with the calibration, so that a catalogue of one or two singers has a
cohort too. With SINGER_EXCLUDE_OUTLIERS, each ranked singer is scored against their model
without the tracks flagged as outliers (`service.enrolment.clean_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from catalog import CatalogBackend, SingerHit
from model.calibration import Calibration, PairCalibration, read_scores
from model.score_norm import snorm_hits
from model.track_embedding import TrackEmbedding
from model.vectors import l2_normalize
from service.enrolment import clean_model

Verdict = Literal["known", "likely", "unknown"]


@dataclass(frozen=True)
class OpenSetPolicy:
    """How /identify reads its ranking: operating points ("known" at `target_fa`, "likely" at
    `likely_fa`), outlier tracks left out of the singer models or not, and the length of one
    embedded segment (seconds), to say how much singing a query had."""

    target_fa: float
    likely_fa: float
    exclude_outliers: bool
    segment_s: float


@dataclass(frozen=True)
class HitReading:
    """Confidence per hit (None without calibration), the verdict on the best one, and how
    much singing a firm answer would need (`firm_answer_s`, None: unknown or never)."""

    confidence: list[float | None]
    verdict: Verdict | None
    threshold: float | None
    likely_threshold: float | None = None
    firm_answer_s: float | None = None


#: Singers scored before the calibrated ranking keeps `top_k`: s-norm can reorder the cosine
#: ranking (on MIR-1K's open-set queries the best s-normed singer was 2nd to 8th by cosine
#: for 9-16 % of the queries, never lower).
CANDIDATES = 10


def rank_singers(
    catalog: CatalogBackend,
    vector: np.ndarray,
    k: int,
    domain: str,
    cal: Calibration | None,
    policy: OpenSetPolicy,
) -> list[SingerHit]:
    """The `k` singers in `domain` most similar by cosine; with `policy.exclude_outliers` each
    candidate (of twice as many) is rescored against their model without outlier tracks."""
    if not policy.exclude_outliers or cal is None or domain not in cal.enrolment:
        return catalog.search_singers(vector, k, domain)
    hits = catalog.search_singers(vector, 2 * k, domain)
    q = l2_normalize(np.asarray(vector, dtype=np.float32))
    out = []
    for h in hits:
        model, n = clean_model(catalog, h.singer, domain, cal.enrolment[domain])
        out.append(SingerHit(h.singer, float(q @ model), h.domain, n))
    return sorted(out, key=lambda h: -h.score)[:k]


def identify_hits(
    catalog: CatalogBackend,
    vector: np.ndarray,
    top_k: int,
    query_domain: str,
    models_domain: str,
    cal: Calibration | None,
    policy: OpenSetPolicy,
    n_segments: int = 1,
) -> tuple[list[SingerHit], HitReading]:
    """The `top_k` singers of `models_domain` for a query vector, best first, and their
    reading. Calibrated, the ranking is by the calibrated score (of CANDIDATES singers by
    cosine), so that the verdict reads the singer the calibration would call best."""
    pair = cal.pair(query_domain, models_domain) if cal is not None else None
    if cal is None or pair is None:
        hits = rank_singers(catalog, vector, top_k, models_domain, cal, policy)
        return hits, read_hits(catalog, vector, hits, query_domain, models_domain, cal, policy)
    hits = rank_singers(catalog, vector, max(top_k, CANDIDATES), models_domain, cal, policy)
    scores = _scores(catalog, vector, hits, query_domain, models_domain, cal, policy)
    order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")[:top_k]
    hits = [hits[i] for i in order]
    reading = _reading(catalog, scores[order], models_domain, pair, policy, n_segments)
    return hits, reading


def _scores(
    catalog: CatalogBackend,
    vector: np.ndarray,
    hits: list[SingerHit],
    query_domain: str,
    models_domain: str,
    cal: Calibration,
    policy: OpenSetPolicy | None = None,
) -> np.ndarray:
    """The hits' scores of the kind the calibration was fitted on (raw cosine or s-norm)."""
    raw = np.array([h.score for h in hits], dtype=np.float64)
    if cal.norm_of(query_domain, models_domain) == "raw" or not hits:
        return raw
    k = cal.cohort_top_k
    q = l2_normalize(np.asarray(vector, dtype=np.float32))
    fixed_q = _cohort_scores(q, cal.cohort_of(models_domain))
    # Query side: its scores against the other singers' models (the hit excluded).
    query_hits = catalog.search_singers(q, k + 1, models_domain)
    query_cohort = [
        np.concatenate([[x.score for x in query_hits if x.singer.id != h.singer.id], fixed_q])
        for h in hits
    ]
    # Model side: the singer model's scores against other singers' tracks.
    model_cohort = []
    for h in hits:
        model = catalog.singer_vector(h.singer.id, models_domain)
        if model is not None and policy is not None and policy.exclude_outliers:
            bar = cal.enrolment.get(models_domain)
            if bar is not None:
                model = clean_model(catalog, h.singer, models_domain, bar)[0]
        if model is None:
            model_cohort.append(np.array([]))
            continue
        tracks = catalog.search_tracks(model, k + h.n_tracks, models_domain)
        others = [t.score for t in tracks if t.track.singer_id != h.singer.id][:k]
        model_cohort.append(
            np.concatenate([others, _cohort_scores(model, cal.cohort_of(query_domain))])
        )
    return snorm_hits(raw, query_cohort, model_cohort, k)


def _cohort_scores(vector: np.ndarray, cohort: np.ndarray | None) -> np.ndarray:
    if cohort is None:
        return np.zeros(0)
    return cohort @ np.asarray(vector, dtype=np.float32)


def read_hits(
    catalog: CatalogBackend,
    vector: np.ndarray,
    hits: list[SingerHit],
    query_domain: str,
    models_domain: str | None,
    cal: Calibration | None,
    policy: OpenSetPolicy,
    n_segments: int = 1,
) -> HitReading:
    """Confidence and verdict of ranked singer hits; nothing invented without calibration.
    n_segments: how many segments the query vector averages (picks the calibration's length
    tier: a longer query scores higher against every singer)."""
    pair = cal.pair(query_domain, models_domain) if cal and models_domain else None
    if cal is None or pair is None or models_domain is None:
        return HitReading([None] * len(hits), None, None)
    scores = _scores(catalog, vector, hits, query_domain, models_domain, cal, policy)
    return _reading(catalog, scores, models_domain, pair, policy, n_segments)


def _reading(
    catalog: CatalogBackend,
    scores: np.ndarray,
    models_domain: str,
    pair: PairCalibration,
    policy: OpenSetPolicy,
    n_segments: int,
) -> HitReading:
    reading = read_scores(
        scores,
        catalog.n_singers(models_domain),
        n_segments,
        pair,
        policy.target_fa,
        policy.likely_fa,
    )
    confidence = [None if np.isnan(c) else float(c) for c in reading.confidence]
    firm = pair.firm_answer_segments
    return HitReading(
        confidence,
        cast(Verdict | None, reading.verdict),
        reading.threshold,
        reading.likely_threshold,
        None if firm is None else firm * policy.segment_s,
    )


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
    policy: OpenSetPolicy,
) -> list[SegmentEvidence]:
    """Best singer of each embedded segment (3 s, voiced), in time order."""
    if emb.segment_vectors is None or emb.starts_s is None or emb.ends_s is None:
        return []
    out = []
    for vec, start, end in zip(emb.segment_vectors, emb.starts_s, emb.ends_s, strict=True):
        unit = l2_normalize(np.asarray(vec, np.float32))
        best = (
            rank_singers(catalog, unit, 1, models_domain, cal, policy)
            if models_domain and np.any(vec)
            else []
        )
        if not best:
            out.append(SegmentEvidence(float(start), float(end), None, None, None, None))
            continue
        # each window is one segment: read at the one-segment tier
        r = read_hits(catalog, vec, best, query_domain, models_domain, cal, policy, 1)
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
