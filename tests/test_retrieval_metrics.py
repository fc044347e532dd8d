"""Retrieval metrics against hand-computed cases and brute force over tie orders."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.evaluation import retrieval_metrics


def _plain_ap(order_rel: list[bool]) -> float:
    hits, total = 0, 0.0
    for pos, rel in enumerate(order_rel, start=1):
        if rel:
            hits += 1
            total += hits / pos
    return total / hits


def _brute_force(scores: np.ndarray, rel: np.ndarray, k: int) -> tuple[float, float, float]:
    """Average P@k, R@k and AP over every order of tied scores (the definition of the metric)."""
    blocks = [np.flatnonzero(scores == s) for s in sorted(set(scores.tolist()), reverse=True)]
    results = []
    for perm in itertools.product(*(itertools.permutations(b) for b in blocks)):
        order = [i for block in perm for i in block]
        r = [bool(rel[i]) for i in order]
        results.append((sum(r[:k]) / k, sum(r[:k]) / rel.sum(), _plain_ap(r)))
    return tuple(np.mean(results, axis=0))


def test_singer_identification_hand_computed():
    scores = np.array(
        [
            [0.9, 0.1, 0.3, 0.2],  # truth 0: rank 1
            [0.5, 0.4, 0.8, 0.1],  # truth 1: rank 3
            [0.2, 0.3, 0.1, 0.4],  # truth 2: rank 4
        ]
    )
    out = retrieval_metrics.singer_identification(scores, np.array([0, 1, 2]), ks=(1, 3))
    assert out["top1"] == pytest.approx(1 / 3)
    assert out["top3"] == pytest.approx(2 / 3)
    assert out["n_queries"] == 3 and out["n_singers"] == 4


def test_topk_ties_count_as_expected_share():
    # Truth (col 0) tied with one other at the top: wins top-1 half of the time.
    # Second row: one strictly higher, truth tied with two others -> positions 2, 3 or 4.
    scores = np.array([[0.7, 0.7, 0.1, 0.0], [0.5, 0.9, 0.5, 0.5]])
    truth = np.array([0, 0])
    np.testing.assert_allclose(retrieval_metrics.topk_hits(scores, truth, 1), [0.5, 0.0])
    np.testing.assert_allclose(retrieval_metrics.topk_hits(scores, truth, 2), [1.0, 1 / 3])
    np.testing.assert_allclose(retrieval_metrics.topk_hits(scores, truth, 3), [1.0, 2 / 3])
    np.testing.assert_allclose(retrieval_metrics.topk_hits(scores, truth, 4), [1.0, 1.0])


def test_topk_matches_brute_force_over_tie_orders():
    rng = np.random.default_rng(1)
    for _ in range(30):
        row = rng.integers(0, 3, size=6).astype(float)  # coarse scores: many ties
        truth = int(rng.integers(0, 6))
        for k in (1, 2, 5):
            blocks = [np.flatnonzero(row == s) for s in sorted(set(row.tolist()), reverse=True)]
            hits = [
                truth in [i for b in perm for i in b][:k]
                for perm in itertools.product(*(itertools.permutations(b) for b in blocks))
            ]
            got = retrieval_metrics.topk_hits(row[None], np.array([truth]), k)[0]
            assert got == pytest.approx(np.mean(hits))


def test_singer_id_rejects_queries_without_a_model():
    with pytest.raises(ValueError, match="no model"):
        retrieval_metrics.singer_identification(np.zeros((1, 2)), np.array([2]))


def test_query_by_singer_hand_computed():
    # Ranking: R N R N N -> AP = (1/1 + 2/3) / 2; P@5 = 2/5; R@5 = 2/2. P@2 = R@2 = 1/2.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = np.array([[True, False, True, False, False]])
    out = retrieval_metrics.query_by_singer(scores, rel, k=5)
    assert out["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["precision@5"] == pytest.approx(0.4)
    assert out["recall@5"] == pytest.approx(1.0)
    out2 = retrieval_metrics.query_by_singer(scores, rel, k=2)
    assert out2["precision@2"] == pytest.approx(0.5) and out2["recall@2"] == pytest.approx(0.5)


def test_query_by_singer_ties_hand_computed():
    # The relevant item is tied with an irrelevant one at positions 2-3: AP = (1/2 + 1/3) / 2.
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    rel = np.array([[False, True, False, False]])
    out = retrieval_metrics.query_by_singer(scores, rel, k=2)
    assert out["mAP"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert out["precision@2"] == pytest.approx(0.25)
    assert out["recall@2"] == pytest.approx(0.5)
    # Order of storage does not matter: swapping the tied items gives the same figures.
    swapped = retrieval_metrics.query_by_singer(scores, rel[:, [0, 2, 1, 3]], k=2)
    assert swapped == out


def test_query_by_singer_matches_brute_force_over_tie_orders():
    rng = np.random.default_rng(7)
    for _ in range(25):
        scores = rng.integers(0, 3, size=7).astype(float)
        rel = rng.random(7) < 0.4
        if not rel.any():
            rel[int(rng.integers(0, 7))] = True
        for k in (1, 3, 5):
            out = retrieval_metrics.query_by_singer(scores[None], rel[None], k=k)
            p, r, ap = _brute_force(scores, rel, k)
            assert out[f"precision@{k}"] == pytest.approx(p)
            assert out[f"recall@{k}"] == pytest.approx(r)
            assert out["mAP"] == pytest.approx(ap)


def test_singer_with_one_model_track():
    # Singer "b" has one model track: its model is that (normalised) track, and its query has
    # exactly one relevant database item, so recall at k is 0 or 1.
    tracks = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0]])
    names, models = retrieval_metrics.singer_models(tracks, ["a", "a", "b"])
    assert names == ["a", "b"]
    np.testing.assert_allclose(models[1], [0.0, 1.0])
    expected_a = (tracks[0] + tracks[1]) / np.linalg.norm(tracks[0] + tracks[1])
    np.testing.assert_allclose(models[0], expected_a)
    query = np.array([[0.1, 1.0]])  # closest to b's single track, then a's second
    scores = retrieval_metrics.cosine_scores(query, tracks)
    rel = np.array([[False, False, True]])
    out = retrieval_metrics.query_by_singer(scores, rel, k=1)
    assert out["recall@1"] == 1.0 and out["mAP"] == 1.0
    rel_a = np.array([[True, True, False]])  # as singer a: ranks 2 and 3
    out_a = retrieval_metrics.query_by_singer(scores, rel_a, k=1)
    assert out_a["recall@1"] == 0.0
    assert out_a["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    sid = retrieval_metrics.singer_identification(
        retrieval_metrics.cosine_scores(query, models), np.array([1])
    )
    assert sid["top1"] == 1.0


def test_precision_divides_by_database_size_when_smaller_than_k():
    out = retrieval_metrics.query_by_singer(np.array([[0.5, 0.2]]), np.array([[True, False]]), k=5)
    assert out["precision@5"] == pytest.approx(0.5)
    assert out["recall@5"] == pytest.approx(1.0)


def test_query_without_relevant_item_is_rejected():
    with pytest.raises(ValueError, match="no relevant"):
        retrieval_metrics.query_by_singer(np.array([[0.5, 0.2]]), np.array([[False, False]]))


def test_cosine_scores_reference():
    rng = np.random.default_rng(0)
    q, t = rng.standard_normal((4, 8)), rng.standard_normal((5, 8))
    ref = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in t] for a in q])
    np.testing.assert_allclose(retrieval_metrics.cosine_scores(q, t), ref, rtol=1e-12)
