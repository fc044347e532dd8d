"""Adaptive s-norm of cosine scores (Matejka et al., Interspeech 2017): the arithmetic.

A raw cosine score says little on its own: how high a "match" scores depends on the query (a
breathy take scores low against everyone) and on the singer model (a generic voice scores high
against everyone). Adaptive s-norm rescales each score by both sides' scores against a cohort
of other voices:

    s = ((c - mean_q) / std_q + (c - mean_m) / std_m) / 2

where mean_q, std_q are over the top-K cosine scores of the query against the cohort in the
models' domain, and mean_m, std_m over the top-K scores of the singer model against the cohort
in the query's domain. Who the cohort is (the catalogue's other singers, voices shipped with
the checkpoint, or both) is the caller's choice (`model.calibration`).
"""

from __future__ import annotations

import numpy as np

#: Scores against the cohort averaged on each side (the K of adaptive s-norm).
DEFAULT_COHORT_TOP_K = 50
#: Fewest cohort scores a side needs for a standard deviation worth dividing by.
MIN_COHORT = 2


def cohort_moments(cohort_scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the `top_k` highest scores along the last axis.

    cohort_scores: (..., n) cosine scores against the cohort (the candidate itself excluded;
    NaN entries are ignored). Returns two (...,) arrays; std is NaN where fewer than MIN_COHORT
    scores exist (s-norm is undefined there).
    """
    s = np.asarray(cohort_scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    k = max(1, min(top_k, s.shape[-1]))
    top = -np.sort(-s, axis=-1)[..., :k]
    valid = np.isfinite(top)
    n = valid.sum(axis=-1)
    top = np.where(valid, top, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = top.sum(axis=-1) / n
        var = (np.where(valid, top - mean[..., None], 0.0) ** 2).sum(axis=-1) / (n - 1)
    std = np.sqrt(var)
    return mean, np.where(n >= MIN_COHORT, np.maximum(std, 1e-6), np.nan)


def snorm(
    raw: np.ndarray | float,
    query_mean: np.ndarray | float,
    query_std: np.ndarray | float,
    model_mean: np.ndarray | float,
    model_std: np.ndarray | float,
) -> np.ndarray:
    """Adaptive s-norm of cosine scores `raw` given both sides' cohort moments (broadcast)."""
    return 0.5 * (
        (np.asarray(raw) - query_mean) / query_std + (np.asarray(raw) - model_mean) / model_std
    )


def snorm_hits(
    raw: np.ndarray,
    query_cohort: list[np.ndarray],
    model_cohort: list[np.ndarray],
    top_k: int = DEFAULT_COHORT_TOP_K,
) -> np.ndarray:
    """S-norm of ranked hits: raw (n,) cosine scores; query_cohort[i] / model_cohort[i] the
    cohort scores of hit i's query and singer model (hit i's own singer excluded)."""
    out = np.full(len(raw), np.nan)
    for i, (qc, mc) in enumerate(zip(query_cohort, model_cohort, strict=True)):
        qm, qs = cohort_moments(np.asarray(qc, dtype=np.float64), top_k)
        mm, ms = cohort_moments(np.asarray(mc, dtype=np.float64), top_k)
        out[i] = snorm(float(raw[i]), qm, qs, mm, ms)
    return out
