"""Retrieval metrics of the paper's section 4: singer identification and query-by-singer.

Ties. Every metric here is the *expected value under a uniformly random order of tied
scores*: a tie is neither a free win nor an automatic loss, and the result does not depend on
the order the items happen to be stored in. For top-k accuracy, when the true singer shares
its score with t others and g singers score strictly higher, it lands uniformly in positions
g+1 .. g+t+1, so the query counts as min(1, max(0, (k - g) / (t + 1))). Precision and recall at
k count the tied block that straddles position k by its expected share of relevant items.
Average precision uses the tie-aware formula of McSherry & Najork ("Computing information
retrieval performance measures efficiently in the presence of tied scores", ECIR 2008), which
is the exact expectation of AP over random orders of every tied block. Without ties all of
these reduce to the usual definitions.

Singers with a single model track are ordinary singers here: their model is that track, and a
query of theirs has one relevant item in query-by-singer (recall at k is then 0 or 1). A query
whose singer has no model or no relevant database track cannot be scored; callers leave such
queries out (`singer_identification` and `query_by_singer` raise on them, so that no figure
silently includes impossible queries).
"""

from __future__ import annotations

import numpy as np

from model.vectors import l2_normalize


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (queries, candidates), got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores hold NaN or infinite values")
    return scores


def topk_hits(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Expected top-k hit per query under random tie order.

    scores: (n_queries, n_classes); truth: (n_queries,) int class index. Returns float (n_queries,)
    in [0, 1] (exactly 0 or 1 when the truth's score is not tied).
    """
    scores = _check_scores(scores)
    truth = np.asarray(truth, dtype=np.int64)
    true_score = scores[np.arange(len(truth)), truth][:, None]
    greater = (scores > true_score).sum(axis=1)
    tied = (scores == true_score).sum(axis=1) - 1  # others sharing the truth's score
    return np.clip((k - greater) / (tied + 1), 0.0, 1.0)


def singer_identification(
    scores: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float | int]:
    """Top-k accuracy of assigning each query to a singer model (section 4.2).

    scores: (n_queries, n_singers) similarity (higher = more alike); truth: (n_queries,) index of
    each query's singer column. Returns {"top1": .., "top5": .., "n_queries": .., "n_singers": ..}.
    """
    scores = _check_scores(scores)
    truth = np.asarray(truth, dtype=np.int64)
    if truth.shape != (scores.shape[0],):
        raise ValueError(f"truth must have shape ({scores.shape[0]},), got {truth.shape}")
    if len(truth) == 0:
        raise ValueError("no queries to score")
    if truth.min() < 0 or truth.max() >= scores.shape[1]:
        raise ValueError("a query's singer has no model (truth index out of range)")
    out: dict[str, float | int] = {f"top{k}": float(topk_hits(scores, truth, k).mean()) for k in ks}
    out.update(n_queries=len(truth), n_singers=int(scores.shape[1]))
    return out


def _tie_blocks(row_scores: np.ndarray, row_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort one query's candidates by score (descending) and group equal scores.

    Returns (block sizes, relevant items per block), blocks in rank order.
    """
    order = np.argsort(-row_scores, kind="stable")
    s, r = row_scores[order], row_rel[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, len(s)])
    rel_per_block = np.add.reduceat(r.astype(np.int64), starts) if len(s) else np.zeros(0, np.int64)
    return sizes, rel_per_block


def _expected_relevant_in_top(sizes: np.ndarray, rels: np.ndarray, k: int) -> float:
    """Expected number of relevant items among the first k positions."""
    before = np.r_[0, np.cumsum(sizes)[:-1]]
    take = np.clip(k - before, 0, sizes)  # slots of each block that fall inside the top k
    return float((take * rels / sizes).sum())


def _expected_average_precision(sizes: np.ndarray, rels: np.ndarray) -> float:
    """Tie-aware AP (McSherry & Najork 2008): exact expectation over random orders of ties."""
    total_rel = rels.sum()
    ap, items_before, rel_before = 0.0, 0, 0
    for t, r in zip(sizes.tolist(), rels.tolist(), strict=True):
        if r:
            pos = np.arange(items_before + 1, items_before + t + 1, dtype=np.float64)
            # Given a relevant item at `pos`, expected relevant items above it inside the block.
            inside = (pos - items_before - 1) * ((r - 1) / (t - 1) if t > 1 else 0.0)
            ap += (r / t) * float(((rel_before + inside + 1.0) / pos).sum())
        items_before += t
        rel_before += r
    return ap / total_rel


def query_by_singer(scores: np.ndarray, relevant: np.ndarray, k: int = 5) -> dict[str, float | int]:
    """Precision at k, recall at k and mean average precision of track retrieval (section 4.3).

    scores: (n_queries, n_database) similarity; relevant: bool (n_queries, n_database), True where
    the database track is by the query's singer. Precision at k divides by min(k, n_database);
    recall at k by the query's number of relevant tracks. Returns {"precision@k", "recall@k",
    "mAP", "n_queries", "n_database"}.
    """
    scores = _check_scores(scores)
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape != scores.shape:
        raise ValueError(f"relevant must have shape {scores.shape}, got {relevant.shape}")
    if scores.shape[0] == 0:
        raise ValueError("no queries to score")
    n_rel = relevant.sum(axis=1)
    if np.any(n_rel == 0):
        raise ValueError(f"{int((n_rel == 0).sum())} queries have no relevant database track")
    depth = min(k, scores.shape[1])
    prec, rec, aps = [], [], []
    for row_s, row_r, nr in zip(scores, relevant, n_rel, strict=True):
        sizes, rels = _tie_blocks(row_s, row_r)
        hits = _expected_relevant_in_top(sizes, rels, depth)
        prec.append(hits / depth)
        rec.append(hits / nr)
        aps.append(_expected_average_precision(sizes, rels))
    return {
        f"precision@{k}": float(np.mean(prec)),
        f"recall@{k}": float(np.mean(rec)),
        "mAP": float(np.mean(aps)),
        "n_queries": int(scores.shape[0]),
        "n_database": int(scores.shape[1]),
    }


def cosine_scores(queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cosine similarity: (n, d) x (m, d) -> (n, m) float64. Zero vectors score 0."""
    q = np.asarray(queries, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    q, t = l2_normalize(q, axis=1), l2_normalize(t, axis=1)
    return q @ t.T


def singer_models(vectors: np.ndarray, singers: list[str]) -> tuple[list[str], np.ndarray]:
    """Mean of each singer's L2-normalised track vectors (the paper's singer model).

    vectors: (n_tracks, d); singers: n_tracks names. Returns (sorted singer names, (n_singers, d)
    L2-normalised models).
    """
    unit = l2_normalize(np.asarray(vectors, dtype=np.float64), axis=1)
    names = sorted(set(singers))
    labels = np.array([names.index(s) for s in singers])
    models = l2_normalize(np.stack([unit[labels == i].mean(axis=0) for i in range(len(names))]))
    return names, models


def bootstrap_ci(
    per_query: np.ndarray, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> list[float]:
    """Percentile-bootstrap interval [low, high] of the mean of per-query figures (n,), e.g.
    the top-1 hits of `topk_hits`: queries resampled with replacement (scipy.stats.bootstrap).
    A single query gives [x, x]."""
    from scipy.stats import bootstrap

    x = np.asarray(per_query, np.float64)
    if len(x) < 2 or np.all(x == x[0]):
        return [float(x.mean()), float(x.mean())] if len(x) else [float("nan")] * 2
    res = bootstrap(
        (x,),
        np.mean,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]
