"""Track-level score fusion (model.evaluation.score_fusion) against the scores it stands for."""

from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.score_fusion import Fusion, fuse_stores
from model.vectors import fuse, l2_normalize


def test_fused_inner_product_is_the_weighted_sum_of_cosines():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 256)), rng.normal(size=(6, 64))
    for w in (0.0, 0.25, 0.5, 1.0):
        f = fuse(a, b, w)
        assert f.shape == (6, 320)
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-6)
        cos_a = l2_normalize(a) @ l2_normalize(a).T
        cos_b = l2_normalize(b) @ l2_normalize(b).T
        np.testing.assert_allclose(f @ f.T, w * cos_a + (1 - w) * cos_b, atol=1e-5)


def test_fuse_stores_keeps_renderings_both_systems_have():
    a = {"mono": {0: np.ones(4), 1: np.ones(4)}, "mixed": {0: np.ones(4)}}
    b = {"mono": {1: np.ones(2), 2: np.ones(2)}}
    got = fuse_stores(a, b, 0.5)
    assert list(got) == ["mono"] and list(got["mono"]) == [1]
    assert got["mono"][1].shape == (6,)


def test_fusion_name_and_checks():
    assert Fusion("default", "teacher", 0.25).name == "default+teacher@0.25"
    with pytest.raises(ValueError, match="outside"):
        Fusion("a", "b", -0.1)
    with pytest.raises(ValueError, match="twice"):
        Fusion("a", "a", 0.5)
