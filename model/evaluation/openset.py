"""Open-set identification: the calibration fit (`python -m model calibrate`) and its figures.

Protocol (`open_set_scenario`). Some singers are held out of the catalogue as impostors; every
clip of theirs is an impostor query. The remaining ("known") singers' model clips form the
catalogue; their query clips are split by song into a calibration half and an evaluation half
(alternate songs), so the calibration never sees an evaluation query nor an impostor singer.
The calibration is fitted on the calibration half with the calibration impostors' clips and,
always, leave-one-singer-out rotations: each known singer in turn leaves the catalogue and
its calibration queries play impostor (a dataset singer unknown to the catalogue, the kind
of impostor the evaluation meets).

The fit (`fit_pair`), on queries of several lengths (`model.evaluation.lengths`):
- scores: raw cosine or adaptive s-norm against the catalogue's other singers plus a fixed
  cohort (recordings of role "cohort", the training takes: what ships with the checkpoint);
- per length tier, the quantiles of impostor queries' best scores, per kind of impostor (the
  stored quantile is the highest of the kinds', so the false-alarm rate holds for each);
- the confidence: P(best singer right) by logistic regression on (best score, log segments,
  their product, the score squared), known queries weighted to `prior_known`, impostors to
  the rest, each kind alike; recordings from outside the dataset (role "impostor") are left
  out of it when singers are there: they are easy to reject, and with them the confidence
  was too sure on unknown singers (docs/open-set.md).

Figures per scenario (`openset_figures`): trial EER and minDCF, oracle DIR at 1 % / 5 % false
alarm (raw and s-norm), the shipped-style calibration's operating points ("known" at the
target, "known or likely" at the looser rate) on clips, by query length and on queries of at
least LONG_QUERY_SEGMENTS segments, and the reliability (ECE) of the confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from model.calibration import (
    FIRM_TARGET_FA,
    NORMS,
    Calibration,
    EnrolmentCalibration,
    PairCalibration,
    Tier,
    pair_key,
)
from model.evaluation.lengths import LENGTH_TIERS, Query, compose_queries, tier_members
from model.evaluation.openset_figures import (
    FA_POINTS,
    Scores,
    dir_at_fa,
    eer_min_dcf,
    open_set_curve,
    operating_point,
    prior_weights,
    reliability,
    trial_scores,
)
from model.evaluation.retrieval_metrics import cosine_scores, singer_models
from model.evaluation.splits import EvalClip, impostor_group
from model.score_norm import DEFAULT_COHORT_TOP_K, cohort_moments, snorm
from model.vectors import normalized_mean

#: Quantile levels of the impostors' best scores stored in a calibration (dense in the tail).
QUANTILE_LEVELS = tuple(
    sorted(set(np.round(np.concatenate([np.linspace(0, 0.9, 10), 1 - np.logspace(-1, -5, 41)]), 8)))
)
#: Fewest impostor queries a length tier needs for its own thresholds (else merged below).
MIN_TIER_IMPOSTORS = 20
#: A query with 10 s of singing or more: 4 segments of 3 s (issue #34's measure).
LONG_QUERY_SEGMENTS = 4
#: A firm answer: the shortest tier whose known queries are identified at least this share
#: of the best tier's rate (more singing helps little beyond it), if that best rate is at
#: least FIRM_MIN_RATE (else no length gives a firm answer).
FIRM_SHARE_OF_BEST = 0.8
FIRM_MIN_RATE = 0.25
#: Impostor kinds: a singer of the data, a recording from outside it, a rotated-out singer.
ROTATION = "rotation"
KNOWN = "known"

Cohort = tuple[np.ndarray, np.ndarray]


def score_queries(
    q_vecs: np.ndarray,
    q_singers: Sequence[str],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    top_k: int = DEFAULT_COHORT_TOP_K,
    cohort: Cohort | None = None,
) -> Scores:
    """Raw and s-normed scores of queries (Q, D) against the singer models built from the
    catalogue tracks (T, D), as the service computes them: the query side's cohort is the
    catalogue's other singer models, the model side's the other singers' tracks, each joined
    by `cohort` = (voices in the catalogue's domain (C, D), the same in the queries' domain)
    when given (the shipped cohort)."""
    names, models = singer_models(t_vecs, list(t_singers))
    raw = cosine_scores(q_vecs, models)  # (Q, N)
    model_vs_tracks = cosine_scores(models, t_vecs)  # (N, T)
    fixed_q = cosine_scores(q_vecs, cohort[0]) if cohort is not None else raw[:, :0]
    fixed_m = cosine_scores(models, cohort[1]) if cohort is not None else raw[:0].T
    t_idx = np.array([names.index(x) for x in t_singers])
    s = np.full_like(raw, np.nan)
    for j in range(len(names)):
        others = np.arange(len(names)) != j
        qm, qs = cohort_moments(np.concatenate([raw[:, others], fixed_q], axis=1), top_k)
        mm, ms = cohort_moments(np.concatenate([model_vs_tracks[j, t_idx != j], fixed_m[j]]), top_k)
        s[:, j] = snorm(raw[:, j], qm, qs, mm, ms)
    truth = np.array([names.index(x) if x in names else -1 for x in q_singers])
    return Scores(names, raw, s, truth)


@dataclass(frozen=True)
class ScoredQueries:
    """Queries scored against one catalogue: n_segments (Q,), kinds (Q,) "known" or the
    impostor's kind (`impostor_group`, or "rotation")."""

    scores: Scores
    n_segments: np.ndarray
    kinds: np.ndarray

    def subset(self, mask: np.ndarray) -> ScoredQueries:
        return ScoredQueries(self.scores.subset(mask), self.n_segments[mask], self.kinds[mask])


def scored_calibration_queries(
    queries: Sequence[Query],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    top_k: int = DEFAULT_COHORT_TOP_K,
    cohort: Cohort | None = None,
) -> list[ScoredQueries]:
    """Every query against the catalogue, then each catalogue singer's queries against the
    catalogue without that singer (leave-one-singer-out: "rotation" impostors)."""
    q_vecs = np.stack([q.vector for q in queries])
    singers = [q.singer for q in queries]
    n = np.array([q.n_segments for q in queries])
    catalogue = set(t_singers)
    kinds = np.array([KNOWN if s in catalogue else impostor_group(s) for s in singers])
    out = [
        ScoredQueries(score_queries(q_vecs, singers, t_vecs, t_singers, top_k, cohort), n, kinds)
    ]
    t_singers_arr = np.asarray(t_singers)
    if len(catalogue) < 3:  # a rotation would leave one singer: no s-norm cohort
        return out
    for left_out in sorted(catalogue):
        mine = np.array([s == left_out for s in singers])
        if not mine.any():
            continue
        keep = t_singers_arr != left_out
        sc = score_queries(
            q_vecs[mine],
            [singers[i] for i in np.flatnonzero(mine)],
            t_vecs[keep],
            t_singers_arr[keep].tolist(),
            top_k,
            cohort,
        )
        out.append(ScoredQueries(sc, n[mine], np.full(mine.sum(), ROTATION)))
    return out


def _pooled(sets: Sequence[ScoredQueries], norm: str) -> tuple[np.ndarray, ...]:
    """(best score, right, n_segments, kind) of every query of `sets`, concatenated."""
    parts = [(*q.scores.best(norm), q.n_segments, q.kinds) for q in sets]
    return tuple(np.concatenate(x) for x in zip(*parts, strict=True))


def confidence_kinds(kinds: np.ndarray) -> list[str]:
    """The impostor kinds the confidence is fitted on: every kind of `kinds` but "known",
    less the recordings from outside the data when another kind is there."""
    impostor_kinds = sorted(set(kinds.tolist()) - {KNOWN})
    if len(impostor_kinds) > 1 and "impostor" in impostor_kinds:
        impostor_kinds.remove("impostor")
    return impostor_kinds


def kind_weights(kinds: np.ndarray, prior_known: float) -> np.ndarray:
    """(Q,) weights, mean 1: the "known" queries `prior_known` in all, the rest shared alike
    by the other kinds present."""
    others = sorted(set(kinds.tolist()) - {KNOWN})
    w = np.zeros(len(kinds))
    for kind in set(kinds.tolist()):
        m = kinds == kind
        w[m] = (prior_known if kind == KNOWN else (1 - prior_known) / len(others)) / m.sum()
    return w / w.sum() * len(w)


def confidence_queries(
    sets: Sequence[ScoredQueries], norm: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(best score, right, n_segments, kind) of the queries of `sets` that the confidence is
    fitted (or checked) on (`confidence_kinds`, defined scores)."""
    top, right, n, kinds = _pooled(sets, norm)
    use = np.isin(kinds, [KNOWN, *confidence_kinds(kinds)]) & np.isfinite(top)
    return top[use], right[use], n[use], kinds[use]


def fit_confidence(
    sets: Sequence[ScoredQueries], norm: str, prior_known: float = 0.5
) -> tuple[tuple[float, ...], float]:
    """Logistic regression of "the best singer is right" on (best score s, l = log segments,
    s * l, s^2) of `confidence_queries`, weighted by `kind_weights` (module docstring).
    Returns ((weights of s, l, s * l, s^2), intercept)."""
    from sklearn.linear_model import LogisticRegression

    top, right, n, kinds = confidence_queries(sets, norm)
    if right.sum() < 2 or (~right).sum() < 2:
        raise ValueError("too few queries to fit the confidence (need right and wrong answers)")
    length = np.log(np.maximum(n, 1))
    # s^2: right and wrong answers' scores spread differently (an unequal-variance pair of
    # Gaussians has a quadratic log-likelihood ratio); without it the confidence was too
    # sure at 0.3-0.7 and not sure enough above (docs/open-set.md)
    x = np.column_stack([top, length, top * length, top * top])
    lr = LogisticRegression(C=1e3, max_iter=20000).fit(
        x, right, sample_weight=kind_weights(kinds, prior_known)
    )
    return tuple(float(v) for v in lr.coef_[0]), float(lr.intercept_[0])


def fit_tier(sets: Sequence[ScoredQueries], norm: str, n_candidates: int) -> Tier:
    """Quantiles of the impostors' best scores of `sets`, the highest of each kind's, and the
    share of known queries identified at FIRM_TARGET_FA. Raises ValueError without at least
    two impostor queries of some kind."""
    top, _, _, kinds = _pooled(sets, norm)
    groups = [top[(kinds == k) & np.isfinite(top)] for k in sorted(set(kinds) - {KNOWN})]
    groups = [g for g in groups if len(g) >= 2]
    if not groups:
        raise ValueError("too few impostor queries to calibrate")
    return Tier(
        quantile_levels=QUANTILE_LEVELS,
        top1_quantiles=tuple(
            float(v) for v in np.max([np.quantile(g, QUANTILE_LEVELS) for g in groups], axis=0)
        ),
        n_candidates=int(n_candidates),
        n_known=int((kinds == KNOWN).sum()),
        n_impostor=int(sum(len(g) for g in groups)),
    )


def _identified(sets: Sequence[ScoredQueries], norm: str, tier: Tier) -> float | None:
    top, right, _, kinds = _pooled(sets, norm)
    known = kinds == KNOWN
    if not known.any():
        return None
    return float((right & (top > tier.threshold(FIRM_TARGET_FA, tier.n_candidates)))[known].mean())


def fit_pair(
    queries: Sequence[Query],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    norm: str = "snorm",
    top_k: int = DEFAULT_COHORT_TOP_K,
    cohort: Cohort | None = None,
    tiers: Sequence[int] = LENGTH_TIERS,
    prior_known: float = 0.5,
) -> PairCalibration:
    """One pair's calibration from queries of several lengths against a catalogue, on the
    scores `norm` ("raw", "snorm", or "auto": whichever identifies more of these known
    queries at FIRM_TARGET_FA, `identified_at_target`; its choice is the pair's `norm`).
    Raises ValueError when the first tier has too few queries."""
    sets = scored_calibration_queries(queries, t_vecs, t_singers, top_k, cohort)
    if norm != "auto":
        return fit_scored_pair(sets, norm, tiers, prior_known)
    fits = [fit_scored_pair(sets, kind, tiers, prior_known) for kind in NORMS]
    # on a tie s-norm: its cohort puts the scores of small and large catalogues on one scale
    return max(fits, key=lambda p: (identified_at_target(sets, p), p.norm == "snorm"))


def fit_scored_pair(
    sets: Sequence[ScoredQueries],
    norm: str,
    tiers: Sequence[int] = LENGTH_TIERS,
    prior_known: float = 0.5,
) -> PairCalibration:
    """`fit_pair` on scored queries, for one score kind `norm` ("raw" or "snorm").

    A tier with fewer than MIN_TIER_IMPOSTORS impostor queries is merged into the one below.
    A longer query's best score only rises (a less noisy mean), so each tier's impostor
    quantiles are kept at least those of the tier below: a small top tier cannot lower the bar.
    Raises ValueError when the first tier has too few queries."""
    n_candidates = len(sets[0].scores.names)
    weights, intercept = fit_confidence(sets, norm, prior_known)
    bands = [tier_members(q.n_segments, tiers) for q in sets]
    n_impostors = np.bincount(
        np.concatenate([b[q.kinds != KNOWN] for q, b in zip(sets, bands, strict=True)]),
        minlength=len(tiers),
    )
    starts = [0] + [j for j in range(1, len(tiers)) if n_impostors[j] >= MIN_TIER_IMPOSTORS]
    fitted: list[Tier] = []
    for j, start in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else len(tiers)
        mine = [q.subset((b >= start) & (b < end)) for q, b in zip(sets, bands, strict=True)]
        tier = fit_tier(mine, norm, n_candidates)
        if fitted:
            floor = fitted[-1].top1_quantiles
            tier = replace(
                tier, top1_quantiles=tuple(max(a, b) for a, b in zip(tier.top1_quantiles, floor))
            )
        tier = replace(tier, min_segments=tiers[start] if fitted else 1)
        fitted.append(replace(tier, identified=_identified(mine, norm, tier)))
    return PairCalibration(
        weights, intercept, tuple(fitted), firm_answer_segments(fitted), norm=norm
    )


def identified_at_target(sets: Sequence[ScoredQueries], pair: PairCalibration) -> float:
    """The share of the known queries of `sets` that `pair` answers right and "known" at
    FIRM_TARGET_FA, each at its own length tier's threshold, on `pair.norm`'s scores."""
    top, right, n, kinds = _pooled(sets, pair.norm or "snorm")
    known = kinds == KNOWN
    if not known.any():
        return 0.0
    tiers = [pair.tier(int(k)) for k in n]
    bars = np.array([t.threshold(FIRM_TARGET_FA, t.n_candidates) for t in tiers])
    return float((right & (top > bars))[known].mean())


def firm_answer_segments(tiers: Sequence[Tier]) -> int | None:
    """The shortest tier identifying FIRM_SHARE_OF_BEST of the best tier's rate, or None
    when no tier reaches FIRM_MIN_RATE."""
    rates = [t.identified or 0.0 for t in tiers]
    if not rates or max(rates) < FIRM_MIN_RATE:
        return None
    return next(
        t.min_segments
        for t, r in zip(tiers, rates, strict=True)
        if r >= FIRM_SHARE_OF_BEST * max(rates)
    )


def fit_calibration(
    pairs: dict[tuple[str, str], tuple[list[Query], np.ndarray, list[str]]],
    checkpoint_id: str,
    fitted_on: dict,
    norm: str = "snorm",
    top_k: int = DEFAULT_COHORT_TOP_K,
    cohort: dict[str, np.ndarray] | None = None,
    enrolment: dict[str, EnrolmentCalibration] | None = None,
    prior_known: float = 0.5,
) -> Calibration:
    """A Calibration from, per (query domain, model domain): (queries of several lengths,
    catalogue track vectors, their singers); `norm`: "raw", "snorm" or "auto" (each pair
    its own, `fit_pair`); `cohort`: domain -> (C, dim) shipped voices (kept when a pair uses
    s-norm)."""
    cohort = cohort if norm != "raw" and cohort else {}
    fitted = {}
    for (qd, md), (queries, tv, ts) in pairs.items():
        c = (cohort[md], cohort[qd]) if md in cohort and qd in cohort else None
        fitted[pair_key(qd, md)] = fit_pair(
            queries, tv, ts, norm, top_k, c, prior_known=prior_known
        )
    kinds = {p.norm for p in fitted.values()}
    if "snorm" not in kinds:
        cohort = {}
    return Calibration(
        checkpoint_id,
        "snorm" if "snorm" in kinds else "raw",
        top_k,
        fitted,
        dict(fitted_on),
        prior_known,
        dict(enrolment or {}),
        dict(cohort),
    )


# -- the evaluation protocol -----------------------------------------------------------------
def song_tracks(
    clips: Sequence[EvalClip], segments: dict[int, np.ndarray], idx: Sequence[int]
) -> tuple[np.ndarray, list[str]]:
    """The catalogue as the service holds it: one track per song, the normalised mean of the
    segments of the song's clips among `idx` (a clip without a song alone). Returns (track
    vectors (T, D), their singers)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in idx:
        if i in segments and len(segments[i]):
            c = clips[i]
            groups.setdefault((c.singer, c.song or c.clip_id), []).append(i)
    keys = sorted(groups)
    vecs = [normalized_mean(np.concatenate([segments[i] for i in sorted(groups[k])])) for k in keys]
    return np.stack(vecs), [s for s, _ in keys]


def split_queries_by_song(songs: Sequence[str | None]) -> np.ndarray:
    """Boolean (n,) mask of the calibration half: alternate distinct songs (sorted) of the
    clips given (one singer's query clips); clips without a song alternate by position."""
    keys = [s if s is not None else f"#{i}" for i, s in enumerate(songs)]
    order = {s: i for i, s in enumerate(sorted(set(keys)))}
    return np.array([order[k] % 2 == 0 for k in keys])


@dataclass(frozen=True)
class OpenSetConfig:
    """impostors: singers left out of the catalogue, whose every clip is an evaluation query;
    calibration_impostors: singers left out too, whose clips are the calibration's impostors
    (with leave-one-singer-out rotations, always); target_fa / likely_fa: the operating
    points; norm: the score calibrated ("raw" cosine, "snorm", or "auto": the one `fit_pair`
    keeps); prior_known: the share of known-singer queries the confidence assumes."""

    impostors: tuple[str, ...]
    calibration_impostors: tuple[str, ...] = ()
    target_fa: float = 0.01
    norm: str = "snorm"
    cohort_top_k: int = DEFAULT_COHORT_TOP_K
    likely_fa: float = 0.1
    prior_known: float = 0.5


def scenario_figures(
    sc: Scores, n_segments: np.ndarray, pair: PairCalibration, cfg: OpenSetConfig
) -> dict:
    """Trial and oracle figures (raw and s-norm), operating points and reliability of one
    set of evaluation queries."""
    out: dict = {"n_known": int((sc.truth >= 0).sum()), "n_impostor": int((sc.truth < 0).sum())}
    for kind in ("raw", "snorm"):
        target, nontarget, impostor = trial_scores(sc, kind)
        fa, dir_ = open_set_curve(sc, kind)
        out[kind] = {
            **eer_min_dcf(target, np.concatenate([nontarget, impostor])),
            **{f"dir@{x:g}": dir_at_fa(fa, dir_, x) for x in FA_POINTS},
        }
    out["operating_point"] = operating_point(sc, n_segments, pair, cfg.norm, cfg.target_fa)
    out["likely_point"] = operating_point(sc, n_segments, pair, cfg.norm, cfg.likely_fa)
    top, right = sc.best(cfg.norm)
    conf = np.array([pair.confidence(s, int(k)) for s, k in zip(top, n_segments, strict=True)])
    out["reliability"] = reliability(conf, right, prior_weights(sc.truth >= 0, cfg.prior_known))
    return out


def open_set_scenario(
    clips: Sequence[EvalClip],
    q_vecs: dict[int, np.ndarray],
    t_vecs: dict[int, np.ndarray],
    cfg: OpenSetConfig,
    q_segments: dict[int, np.ndarray] | None = None,
    pair: PairCalibration | None = None,
    t_segments: dict[int, np.ndarray] | None = None,
) -> tuple[dict, Scores] | None:
    """Figures of one scenario under the protocol of the module docstring.

    clips: EvalClip list; q_vecs / t_vecs: clip index -> track vector in the query / target
    rendering; q_segments: clip index -> segment embeddings in the query rendering, which make
    queries of several lengths (without: each clip is a one-segment query); pair: a fitted
    calibration of this pair (a shipped file's) to apply instead of fitting one on the
    calibration half; t_segments: clip index -> segment embeddings in the target rendering,
    which make the catalogue one track per song, as the service holds it (`song_tracks`;
    without: one track per model clip). Returns (figures,
    scores of the evaluation clips) or None when a side is empty.
    """
    imp, cal_imp = set(cfg.impostors), set(cfg.calibration_impostors)
    if imp & cal_imp:
        raise ValueError(f"singers both impostors and calibration impostors: {imp & cal_imp}")
    t_idx = [
        i
        for i in sorted(t_vecs)
        if clips[i].role == "model" and clips[i].singer not in imp | cal_imp
    ]
    known = sorted({clips[i].singer for i in t_idx})
    cal, ev = [], []
    for singer in known:
        mine = [i for i in sorted(q_vecs) if clips[i].role == "query" and clips[i].singer == singer]
        half = split_queries_by_song([clips[i].song for i in mine])
        cal += [i for i, h in zip(mine, half, strict=True) if h]
        ev += [i for i, h in zip(mine, half, strict=True) if not h]
    ev += [i for i in sorted(q_vecs) if clips[i].singer in imp]
    # the shipped s-norm cohort: voices outside the data, in both renderings (role "cohort")
    c_idx = [i for i in sorted(q_vecs) if clips[i].role == "cohort" and i in t_vecs]
    cohort = (
        (np.stack([t_vecs[i] for i in c_idx]), np.stack([q_vecs[i] for i in c_idx]))
        if c_idx and cfg.norm != "raw"
        else None
    )
    cal += [i for i in sorted(q_vecs) if clips[i].singer in cal_imp or clips[i].role == "impostor"]
    if len(known) < 3 or not cal or not any(clips[i].singer in imp for i in ev):
        return None
    if t_segments is not None:
        tv, ts = song_tracks(clips, t_segments, t_idx)
    else:
        tv = np.stack([t_vecs[i] for i in t_idx])
        ts = [clips[i].singer for i in t_idx]

    def queries(idx: list[int]) -> list[Query]:
        if q_segments is None:
            return [Query(q_vecs[i], clips[i].singer, 1) for i in idx]
        return compose_queries(clips, q_segments, idx)

    if pair is None:
        pair = fit_pair(
            queries(cal), tv, ts, cfg.norm, cfg.cohort_top_k, cohort, prior_known=cfg.prior_known
        )
    # the figures read the pair's own score (a file's pair without one: the asked, else s-norm)
    cfg = replace(cfg, norm=pair.norm or (cfg.norm if cfg.norm != "auto" else "snorm"))
    ev_clips = [i for i in ev if q_segments is None or i in q_segments]
    n_clip = np.array([len(q_segments[i]) if q_segments is not None else 1 for i in ev_clips])
    sc = score_queries(
        np.stack([q_vecs[i] for i in ev_clips]),
        [clips[i].singer for i in ev_clips],
        tv,
        ts,
        cfg.cohort_top_k,
        cohort,
    )
    out: dict = {
        "norm": cfg.norm,
        "clips": scenario_figures(sc, n_clip, pair, cfg),
        "calibration": pair.to_dict(),
    }
    if q_segments is not None:
        composed = compose_queries(clips, q_segments, ev_clips)
        n = np.array([q.n_segments for q in composed])
        csc = score_queries(
            np.stack([q.vector for q in composed]),
            [q.singer for q in composed],
            tv,
            ts,
            cfg.cohort_top_k,
            cohort,
        )
        out["composed"] = scenario_figures(csc, n, pair, cfg)
        long = n >= LONG_QUERY_SEGMENTS
        out["long"] = scenario_figures(csc.subset(long), n[long], pair, cfg)
        band = tier_members(n)
        out["by_length"] = {
            f">={start}": operating_point(
                csc.subset(band == j), n[band == j], pair, cfg.norm, cfg.target_fa
            )
            for j, start in enumerate(LENGTH_TIERS)
            if (band == j).any()
        }
    out["n_calibration_queries"] = len(cal)
    out["snorm_cohort"] = (
        f"the catalogue + {len(c_idx)} fixed recordings" if cohort is not None else "the catalogue"
    )
    out["impostors"] = sorted(imp)
    extra = len({clips[i].singer for i in cal if clips[i].role == "impostor"})
    out["calibration_impostors"] = (
        sorted(cal_imp)
        + ["leave-one-singer-out"]
        + ([f"{extra} impostor recordings"] if extra else [])
    )
    return out, sc
