"""Unit vectors: L2 normalisation and the normalised mean (track vectors, singer models)."""

from __future__ import annotations

import numpy as np

_EPS = 1e-12  # a zero vector stays zero instead of becoming NaN


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x / ||x|| along `axis`, in x's float dtype (float64 for integer input)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), _EPS)


def normalized_mean(vectors: np.ndarray) -> np.ndarray:
    """(n, dim) vectors -> (dim,) float32 L2-normalised mean, accumulated in float64.

    The paper's track vector (mean of segment embeddings) and singer model (mean of
    L2-normalised track vectors) are both this.
    """
    mean = np.asarray(vectors, np.float64).mean(axis=0)
    return l2_normalize(mean).astype(np.float32)


def fuse(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """(..., d1) and (..., d2) vectors -> (..., d1 + d2) float32 unit vectors
    [sqrt(w) a / |a|, sqrt(1 - w) b / |b|]: the inner product of two is exactly
    w cos(a, a') + (1 - w) cos(b, b'), so one inner-product index scores a weighted fusion."""
    a = l2_normalize(np.asarray(a, np.float32))
    b = l2_normalize(np.asarray(b, np.float32))
    return np.concatenate([np.sqrt(weight) * a, np.sqrt(1.0 - weight) * b], axis=-1).astype(
        np.float32
    )
