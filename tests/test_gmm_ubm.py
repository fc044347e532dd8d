"""GMM-UBM baseline: MAP adaptation recovers shifted means; LLR scoring against references."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.evaluation.gmm_ubm import GmmUbm, GmmUbmConfig, mfcc_frames

CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0]])
SHIFT = np.array([[1.0, -0.5, 0.0], [0.0, 1.0, 0.5], [-1.0, 0.0, 0.5], [0.5, 0.5, -1.0]])
CFG = replace(GmmUbmConfig(), n_components=4, ubm_max_frames=20_000, seed=0)


def _sample(centres: np.ndarray, n: int, rng) -> np.ndarray:
    comp = rng.integers(0, len(centres), size=n)
    return centres[comp] + 0.7 * rng.standard_normal((n, centres.shape[1]))


@pytest.fixture(scope="module")
def ubm() -> GmmUbm:
    return GmmUbm.fit(_sample(CENTRES, 40_000, np.random.default_rng(0)), CFG)


def _order(ubm: GmmUbm) -> np.ndarray:
    """UBM component index nearest to each true centre."""
    return np.array([np.argmin(((ubm.means - c) ** 2).sum(axis=1)) for c in CENTRES])


def test_ubm_finds_the_centres(ubm):
    np.testing.assert_allclose(ubm.means[_order(ubm)], CENTRES, atol=0.05)
    np.testing.assert_allclose(ubm.weights, 0.25, atol=0.02)


def test_map_adaptation_recovers_shifted_means(ubm):
    order = _order(ubm)
    singer = _sample(CENTRES + SHIFT, 20_000, np.random.default_rng(1))
    adapted = ubm.adapt_means(singer, relevance=16.0)
    # ~5000 frames per component: alpha = 5000 / 5016, so the means move almost fully.
    np.testing.assert_allclose(adapted[order], CENTRES + SHIFT, atol=0.06)
    # Few frames: the relevance factor keeps the means near the UBM (alpha = n / (n + r)).
    few = singer[:8]
    partial = ubm.adapt_means(few, relevance=1e6)
    np.testing.assert_allclose(partial, ubm.means, atol=1e-3)


def test_map_adaptation_formula(ubm):
    from sklearn.mixture import GaussianMixture

    x = _sample(CENTRES + SHIFT, 300, np.random.default_rng(2))
    ref = GaussianMixture(4, covariance_type="diag")
    ref.weights_, ref.means_, ref.covariances_ = ubm.weights, ubm.means, ubm.variances
    ref.precisions_cholesky_ = 1.0 / np.sqrt(ubm.variances)
    gamma = ref.predict_proba(x)
    n = gamma.sum(axis=0)
    alpha = (n / (n + 4.0))[:, None]
    expected = alpha * (gamma.T @ x) / n[:, None] + (1 - alpha) * ubm.means
    np.testing.assert_allclose(ubm.adapt_means(x, relevance=4.0), expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ubm.log_likelihood(x), ref.score_samples(x), rtol=1e-10)


def test_llr_scoring(ubm):
    rng = np.random.default_rng(3)
    a = ubm.adapt_means(_sample(CENTRES + SHIFT, 4000, rng))
    b = ubm.adapt_means(_sample(CENTRES - SHIFT, 4000, rng))
    query_a = _sample(CENTRES + SHIFT, 500, rng)
    exact = ubm.score(query_a, np.stack([a, b]))
    assert exact[0] > 0.2 and exact[0] > exact[1] + 0.5  # the right model wins clearly

    # Reference: average over frames of log p(x | adapted) - log p(x | UBM), computed directly.
    def loglik(x, means):
        comp = [
            np.log(w) - 0.5 * (np.log(2 * np.pi * v).sum() + (((x - m) ** 2) / v).sum(axis=1))
            for w, m, v in zip(ubm.weights, means, ubm.variances, strict=True)
        ]
        comp = np.stack(comp, axis=1)  # (T, K)
        return np.logaddexp.reduce(comp, axis=1), comp

    ref = [np.mean(loglik(query_a, m)[0] - loglik(query_a, ubm.means)[0]) for m in (a, b)]
    np.testing.assert_allclose(exact, ref, rtol=1e-9)
    # Top-C: only each frame's C best UBM components, in both models (brute force reference).
    _, comp_ubm = loglik(query_a, ubm.means)
    top2 = np.argsort(-comp_ubm, axis=1)[:, :2]

    def top_c_ll(means):
        comp = np.take_along_axis(loglik(query_a, means)[1], top2, axis=1)
        return np.logaddexp.reduce(comp, axis=1)

    ref_top2 = [np.mean(top_c_ll(m) - top_c_ll(ubm.means)) for m in (a, b)]
    np.testing.assert_allclose(ubm.score(query_a, np.stack([a, b]), top_c=2), ref_top2, rtol=1e-9)
    # C >= K is exact; C = 1 is close here (well-separated components).
    np.testing.assert_allclose(ubm.score(query_a, np.stack([a, b]), top_c=4), exact, rtol=1e-9)
    np.testing.assert_allclose(ubm.score(query_a, np.stack([a, b]), top_c=1), exact, atol=0.02)


def test_mfcc_frames_shape_and_silence_dropped():
    sr = 22050
    t = np.arange(sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    y = np.concatenate([tone, np.zeros(sr), tone]).astype(np.float32)
    cfg = GmmUbmConfig()
    all_frames = mfcc_frames(y, sr, replace(cfg, frame_top_db=None))
    voiced = mfcc_frames(y, sr, cfg)
    assert all_frames.shape == (1 + len(y) // cfg.hop_length, 13)
    assert voiced.dtype == np.float32
    # The silent second is dropped (about a third of the frames).
    assert 0.6 * len(all_frames) < len(voiced) < 0.72 * len(all_frames)
