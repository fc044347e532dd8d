"""Open-set identification: score normalisation trials, calibration fit, and figures.

Protocol (`open_set_scenario`). Some singers are held out of the catalogue as impostors; every
clip of theirs is an impostor query. The remaining ("known") singers' model clips form the
catalogue; their query clips are split by song into a calibration half and an evaluation half
(alternate songs), so the calibration never sees an evaluation query nor an impostor singer.
The calibration is fitted on the calibration half with the calibration impostors' clips, or,
without any, with leave-one-singer-out rotations over the known singers: each known singer in
turn leaves the catalogue and its queries play impostor.

Figures per scoring ("raw" cosine, "snorm"):
- trial level (verification of (query, singer) pairs): EER and normalised minDCF (P_target
  0.01, C_miss = C_fa = 1), from sklearn's ROC;
- query level (open-set identification): the detection-and-identification rate (known query,
  top-1 correct and above threshold) at 1 % and 5 % false alarm (impostor queries whose top-1
  is above threshold), thresholds set on the evaluation queries themselves (oracle);
- operating point of the calibration (on the configured score): the threshold the service
  uses for a target false-alarm rate, applied to the evaluation queries: measured false-alarm
  rate, detection rate of known singers (top-1 accepted) and identification rate (accepted
  and correct);
- the same by query length (`length_operating_points`): the evaluation recordings cut into
  runs of segments, read with a calibration fitted on clips and with length tiers.

The shipped calibration (`fit_calibration`) has a tier per query length (`fit_tiers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from model.calibration import (
    DEFAULT_COHORT_TOP_K,
    Calibration,
    PairCalibration,
    cohort_moments,
    pair_key,
    snorm,
    tier_for,
)
from model.evaluation.lengths import LENGTH_TIERS, Query, compose_queries, tier_members
from model.evaluation.retrieval_metrics import cosine_scores, singer_models
from model.evaluation.splits import impostor_group
from model.vectors import normalized_mean

#: Quantile levels of the non-target distribution stored in a calibration (dense in the tail).
QUANTILE_LEVELS = tuple(
    sorted(set(np.round(np.concatenate([np.linspace(0, 0.9, 10), 1 - np.logspace(-1, -5, 41)]), 8)))
)
DCF_P_TARGET = 0.01
#: Fewest impostor queries a length tier needs for its own calibration (else merged below).
MIN_TIER_IMPOSTORS = 20
FA_POINTS = (0.01, 0.05)


@dataclass
class Scores:
    """Scores of queries against the singer models of one catalogue.

    names: (N,) singer names; raw / snormed: (Q, N); truth: (Q,) index of each query's singer
    in names, -1 for an impostor.
    """

    names: list[str]
    raw: np.ndarray
    snormed: np.ndarray
    truth: np.ndarray

    def get(self, norm: str) -> np.ndarray:
        return self.snormed if norm == "snorm" else self.raw


def score_queries(
    q_vecs: np.ndarray,
    q_singers: Sequence[str],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    top_k: int = DEFAULT_COHORT_TOP_K,
    cohort: tuple[np.ndarray, np.ndarray] | None = None,
) -> Scores:
    """Raw and s-normed scores of queries (Q, D) against the singer models built from the
    catalogue tracks (T, D). The cohort is the catalogue (as the service does), or, given
    `cohort` = (vectors in the catalogue's domain (C, D), vectors in the queries' domain
    (C, D)) of voices outside it, that fixed set: the query side is scored against the first,
    the singer models against the second."""
    names, models = singer_models(t_vecs, list(t_singers))
    raw = cosine_scores(q_vecs, models)  # (Q, N)
    if cohort is not None:
        qm, qs = cohort_moments(cosine_scores(q_vecs, cohort[0]), top_k)  # (Q,)
        mm, ms = cohort_moments(cosine_scores(models, cohort[1]), top_k)  # (N,)
        s = snorm(raw, qm[:, None], qs[:, None], mm[None, :], ms[None, :])
    else:
        s = np.full_like(raw, np.nan)
        model_vs_tracks = cosine_scores(models, t_vecs)  # (N, T)
        t_idx = np.array([names.index(x) for x in t_singers])
        for j in range(len(names)):
            others = np.arange(len(names)) != j
            qm, qs = cohort_moments(raw[:, others], top_k)
            mm, ms = cohort_moments(model_vs_tracks[j, t_idx != j], top_k)
            s[:, j] = snorm(raw[:, j], qm, qs, mm, ms)
    truth = np.array([names.index(x) if x in names else -1 for x in q_singers])
    return Scores(names, raw, s, truth)


def trial_scores(sc: Scores, norm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target scores, non-target scores of known queries, non-target scores of impostors)."""
    m = sc.get(norm)
    known = sc.truth >= 0
    target_mask = np.zeros_like(m, dtype=bool)
    target_mask[np.flatnonzero(known), sc.truth[known]] = True
    target = m[target_mask]
    nontarget_known = m[known][~target_mask[known]]
    impostor = m[~known].ravel()
    return target, nontarget_known, impostor


def fit_pair(
    target: np.ndarray,
    nontarget: np.ndarray,
    impostor_top1: Sequence[np.ndarray],
    n_candidates: int,
) -> PairCalibration:
    """Logistic regression of score on same-singer (sklearn) and the quantiles of impostor
    queries' best scores against catalogues of `n_candidates` singers.

    impostor_top1: the best scores of each kind of impostor apart (`impostor_group`); the
    stored quantile at each level is the highest of the kinds', so the verdict's false-alarm
    rate holds for every kind the calibration saw, not only on average over them."""
    from sklearn.linear_model import LogisticRegression

    target, nontarget = (x[np.isfinite(x)] for x in (target, nontarget))
    groups = [g[np.isfinite(g)] for g in impostor_top1]
    groups = [g for g in groups if len(g) >= 2]
    if len(target) < 2 or not groups:
        raise ValueError("too few trials to calibrate (need target and impostor queries)")
    x = np.concatenate([target, nontarget])[:, None]
    y = np.concatenate([np.ones(len(target)), np.zeros(len(nontarget))])
    lr = LogisticRegression(C=1e6).fit(x, y)
    return PairCalibration(
        slope=float(lr.coef_[0, 0]),
        intercept=float(lr.intercept_[0]),
        quantile_levels=QUANTILE_LEVELS,
        top1_quantiles=tuple(
            float(v) for v in np.max([np.quantile(g, QUANTILE_LEVELS) for g in groups], axis=0)
        ),
        n_candidates=int(n_candidates),
        n_target=len(target),
        n_nontarget=len(nontarget),
    )


def calibration_trials(
    q_vecs: np.ndarray,
    q_singers: Sequence[str],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    norm: str = "raw",
    top_k: int = DEFAULT_COHORT_TOP_K,
    cohort: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Trials to fit a calibration on. Queries of singers absent from the catalogue tracks
    are the impostors; without any, leave-one-singer-out rotations make them: each catalogue
    singer in turn leaves the catalogue and its queries play impostor.

    Returns, pooled: target trial scores, non-target trial scores (wrong singer, known or
    impostor query), impostor queries' best scores per kind of impostor (`impostor_group`,
    in sorted order of kinds); and the catalogue size they were met at.
    """
    t_singers_arr = np.asarray(t_singers)
    catalogue = sorted(set(t_singers))
    if not set(q_singers) - set(catalogue):
        rotations = [t_singers_arr != left_out for left_out in catalogue]
    else:
        rotations = [np.ones(len(t_singers_arr), dtype=bool)]
    kinds = np.array([impostor_group(s) for s in q_singers])
    parts: list[list[np.ndarray]] = [[], []]
    top1: dict[str, list[np.ndarray]] = {}
    for keep in rotations:
        sc = score_queries(
            q_vecs, q_singers, t_vecs[keep], t_singers_arr[keep].tolist(), top_k, cohort
        )
        target, nontarget, impostor = trial_scores(sc, norm)
        parts[0].append(target)
        parts[1].append(np.concatenate([nontarget, impostor]))
        best = sc.get(norm)[sc.truth < 0].max(axis=1)
        for kind in np.unique(kinds[sc.truth < 0]):
            top1.setdefault(kind, []).append(best[kinds[sc.truth < 0] == kind])
    target, nontarget = (np.concatenate(p) for p in parts)
    return target, nontarget, [np.concatenate(top1[k]) for k in sorted(top1)], len(sc.names)


def fit_tiers(
    queries: Sequence[Query],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    norm: str = "raw",
    top_k: int = DEFAULT_COHORT_TOP_K,
    tiers: Sequence[int] = LENGTH_TIERS,
    cohort: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[PairCalibration, ...]:
    """One pair's calibration per query length tier (`model.calibration`), each fitted on the
    queries of its tier by leave-one-singer-out rotations (`calibration_trials`).

    A tier with fewer than MIN_TIER_IMPOSTORS impostor queries is merged into the one below.
    A longer query's best score only rises (a less noisy mean), so each tier's impostor
    quantiles are kept at least those of the tier below: a small top tier cannot lower the bar.
    Raises ValueError when the first tier has too few trials.
    """
    tier = tier_members([q.n_segments for q in queries], tiers)
    catalogue = set(t_singers)
    impostor = np.array([q.singer not in catalogue for q in queries])
    starts = [0] + [
        j for j in range(1, len(tiers)) if (impostor & (tier == j)).sum() >= MIN_TIER_IMPOSTORS
    ]
    fitted: list[PairCalibration] = []
    for j, start in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else len(tiers)
        mine = [q for q, t in zip(queries, tier, strict=True) if start <= t < end]
        if not mine:
            continue
        pair = fit_pair(
            *calibration_trials(
                np.stack([q.vector for q in mine]),
                [q.singer for q in mine],
                t_vecs,
                t_singers,
                norm,
                top_k,
                cohort,
            )
        )
        if fitted:
            floor = fitted[-1].top1_quantiles
            pair = replace(
                pair, top1_quantiles=tuple(max(a, b) for a, b in zip(pair.top1_quantiles, floor))
            )
        fitted.append(replace(pair, min_segments=tiers[start] if fitted else 1))
    return tuple(fitted)


def fit_calibration(
    pairs: dict[tuple[str, str], tuple[list[Query], np.ndarray, list[str]]],
    checkpoint_id: str,
    fitted_on: dict,
    norm: str = "raw",
    top_k: int = DEFAULT_COHORT_TOP_K,
) -> Calibration:
    """A Calibration from, per (query domain, model domain): (queries of several lengths,
    catalogue track vectors, their singers), per length tier (`fit_tiers`)."""
    fitted = {
        pair_key(qd, md): fit_tiers(queries, tv, ts, norm, top_k)
        for (qd, md), (queries, tv, ts) in pairs.items()
    }
    return Calibration(checkpoint_id, norm, top_k, fitted, dict(fitted_on))


# -- figures ---------------------------------------------------------------------------------
def eer_min_dcf(target: np.ndarray, nontarget: np.ndarray) -> dict[str, float]:
    """Equal error rate and normalised minimum detection cost (P_target 0.01) of trials."""
    from sklearn.metrics import roc_curve

    y = np.concatenate([np.ones(len(target)), np.zeros(len(nontarget))])
    fpr, tpr, _ = roc_curve(y, np.concatenate([target, nontarget]))
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    dcf = DCF_P_TARGET * fnr + (1 - DCF_P_TARGET) * fpr
    norm = min(DCF_P_TARGET, 1 - DCF_P_TARGET)
    return {"eer": float((fnr[i] + fpr[i]) / 2), "min_dcf": float(dcf.min() / norm)}


def open_set_curve(sc: Scores, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rate, detection-and-identification rate) over every top-1 threshold."""
    m = sc.get(norm)
    top = m.max(axis=1)
    known = sc.truth >= 0
    correct = known & (m.argmax(axis=1) == np.where(known, sc.truth, 0))
    imp = np.sort(top[~known])
    thresholds = np.unique(np.concatenate([top, [np.inf]]))
    fa = 1.0 - np.searchsorted(imp, thresholds, side="right") / max(1, len(imp))
    dir_ = np.array([(correct & (top > t)).sum() for t in thresholds]) / max(1, known.sum())
    # threshold t accepts scores strictly above t; also allow accepting everything
    return np.concatenate([[1.0], fa]), np.concatenate(
        [[correct.sum() / max(1, known.sum())], dir_]
    )


def dir_at_fa(fa: np.ndarray, dir_: np.ndarray, target: float) -> float:
    """Best detection-and-identification rate with a false-alarm rate at most `target`."""
    ok = fa <= target + 1e-12
    return float(dir_[ok].max()) if ok.any() else 0.0


def operating_point(sc: Scores, pair: PairCalibration, norm: str, target_fa: float) -> dict:
    """The calibration's verdict threshold applied to the evaluation queries."""
    t = pair.threshold(target_fa, len(sc.names))
    m = sc.get(norm)
    top = m.max(axis=1)
    known = sc.truth >= 0
    accepted = top > t
    correct = known & (m.argmax(axis=1) == np.where(known, sc.truth, 0))
    return {
        "target_fa": target_fa,
        "threshold": float(t),
        "false_alarm_rate": float(accepted[~known].mean()),
        "detection_rate": float(accepted[known].mean()),
        "identification_rate": float((accepted & correct)[known].mean()),
    }


def figures(
    sc: Scores, calibration_pair: PairCalibration | None, norm: str, target_fa: float
) -> dict:
    """Every figure of the module docstring for one scenario."""
    out: dict = {
        "n_singers": len(sc.names),
        "n_known_queries": int((sc.truth >= 0).sum()),
        "n_impostor_queries": int((sc.truth < 0).sum()),
    }
    for kind in ("raw", "snorm"):
        target, nontarget, impostor = trial_scores(sc, kind)
        fa, dir_ = open_set_curve(sc, kind)
        out[kind] = {
            **eer_min_dcf(target, np.concatenate([nontarget, impostor])),
            **{f"dir@{x:g}": dir_at_fa(fa, dir_, x) for x in FA_POINTS},
        }
    if calibration_pair is not None:
        out["operating_point"] = {
            "norm": norm,
            **operating_point(sc, calibration_pair, norm, target_fa),
        }
    return out


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
    (empty: leave-one-singer-out rotations over the known singers); target_fa: the operating
    point; norm: the score calibrated ("raw" cosine or "snorm")."""

    impostors: tuple[str, ...]
    calibration_impostors: tuple[str, ...] = ()
    target_fa: float = 0.01
    norm: str = "raw"
    cohort_top_k: int = DEFAULT_COHORT_TOP_K


def open_set_scenario(
    clips,
    q_vecs: dict[int, np.ndarray],
    t_vecs: dict[int, np.ndarray],
    cfg: OpenSetConfig,
    q_segments: dict[int, np.ndarray] | None = None,
) -> tuple[dict, Scores] | None:
    """Figures of one scenario under the protocol of the module docstring.

    clips: EvalClip list; q_vecs / t_vecs: clip index -> track vector in the query / target
    rendering; q_segments: clip index -> segment embeddings in the query rendering, for the
    operating points by query length (`by_length`). Returns (figures, evaluation scores) or
    None when a side is empty.
    """
    imp = set(cfg.impostors)
    cal_imp = set(cfg.calibration_impostors)
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
    imp_q = [i for i in sorted(q_vecs) if clips[i].singer in imp]
    # a fixed s-norm cohort: voices outside the data, in both renderings (role "cohort")
    c_idx = [i for i in sorted(q_vecs) if clips[i].role == "cohort" and i in t_vecs]
    cohort = (
        (np.stack([t_vecs[i] for i in c_idx]), np.stack([q_vecs[i] for i in c_idx]))
        if c_idx
        else None
    )
    cal += [i for i in sorted(q_vecs) if clips[i].singer in cal_imp or clips[i].role == "impostor"]
    if len(known) < 3 or not cal or not ev or not imp_q:
        return None
    tv = np.stack([t_vecs[i] for i in t_idx])
    ts = [clips[i].singer for i in t_idx]

    def side(idx: list[int]) -> tuple[np.ndarray, list[str]]:
        return np.stack([q_vecs[i] for i in idx]), [clips[i].singer for i in idx]

    trials = calibration_trials(*side(cal), tv, ts, cfg.norm, cfg.cohort_top_k, cohort)
    pair = fit_pair(*trials)
    sc = score_queries(*side(ev + imp_q), tv, ts, cfg.cohort_top_k, cohort)
    out = figures(sc, pair, cfg.norm, cfg.target_fa)
    out["n_calibration_queries"] = len(cal)
    if q_segments is not None:
        out["by_length"] = length_operating_points(
            clips, q_segments, cal, ev + imp_q, tv, ts, cfg, cohort
        )
    out["snorm_cohort"] = f"{len(c_idx)} fixed recordings" if c_idx else "the catalogue"
    out["impostors"] = sorted(imp)
    extra = len({clips[i].singer for i in cal if clips[i].role == "impostor"})
    out["calibration_impostors"] = (sorted(cal_imp) or ["leave-one-singer-out"]) + (
        [f"{extra} impostor recordings"] if extra else []
    )
    return out, sc


def length_operating_points(
    clips,
    segments: dict[int, np.ndarray],
    cal_idx: Sequence[int],
    eval_idx: Sequence[int],
    t_vecs: np.ndarray,
    t_singers: Sequence[str],
    cfg: OpenSetConfig,
    cohort: tuple[np.ndarray, np.ndarray] | None = None,
    tiers: Sequence[int] = LENGTH_TIERS,
) -> dict[str, dict]:
    """Operating points per query length band (`LENGTH_TIERS`): the evaluation recordings cut
    into runs of segments (`compose_queries`), read with a calibration fitted on the
    calibration clips as they are ("clips", one tier) and with length tiers fitted on runs of
    their segments ("tiers", what `python -m model calibrate` ships).

    Returns {">=<first segment of the band>": {n_known, n_impostor, clips: operating point,
    tiers: operating point}}, bands without known or impostor queries left out.
    """

    args = (t_vecs, t_singers, cfg.norm, cfg.cohort_top_k)
    whole = [
        Query(normalized_mean(segments[i]), clips[i].singer, len(segments[i]))
        for i in cal_idx
        if i in segments and len(segments[i])
    ]
    by_clip = fit_tiers(whole, *args, tiers=(1,), cohort=cohort)
    tiered = fit_tiers(compose_queries(clips, segments, cal_idx), *args, tiers, cohort)
    ev = compose_queries(clips, segments, eval_idx)
    if not ev:
        return {}
    sc = score_queries(
        np.stack([q.vector for q in ev]),
        [q.singer for q in ev],
        t_vecs,
        t_singers,
        cfg.cohort_top_k,
        cohort,
    )
    band = tier_members([q.n_segments for q in ev], tiers)
    out = {}
    for j, start in enumerate(tiers):
        mine = band == j
        sub = Scores(sc.names, sc.raw[mine], sc.snormed[mine], sc.truth[mine])
        n_known = int((sub.truth >= 0).sum())
        n_imp = int((sub.truth < 0).sum())
        if n_known and n_imp:
            out[f">={start}"] = {
                "n_known": n_known,
                "n_impostor": n_imp,
                "clips": operating_point(sub, tier_for(by_clip, start), cfg.norm, cfg.target_fa),
                "tiers": operating_point(sub, tier_for(tiered, start), cfg.norm, cfg.target_fa),
            }
    return out
