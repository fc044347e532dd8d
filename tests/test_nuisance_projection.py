"""Nuisance projection of a fused checkpoint (`model.fusion.NuisanceProjection`,
`model.training.centres.nuisance_of`): fitted as the principal axes of cross-domain
differences, stored, checked, applied after fusion (and the domain centres before it), and
kept or dropped with the centres."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from model.checkpoint import load_checkpoint
from model.domains import DOMAINS
from model.embedding import Embedder
from model.errors import CheckpointError
from model.fusion import (
    CENTRES_KEY,
    FUSION_KEY,
    NUISANCE_KEY,
    NuisanceProjection,
    fuse_checkpoint,
)
from model.training.centres import Recording, centres_of, embed_parts, nuisance_of
from model.vectors import fuse, l2_normalize, normalized_mean
from tests.support.fusion import random_centres, spoiled
from tests.support.live import render

WEIGHT = 0.25  # the conftest's fused_checkpoint
DIM = 512


def random_projection(seed: int, k: int = 3) -> NuisanceProjection:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((DIM, k)))
    return NuisanceProjection(q.T.astype(np.float32))


@pytest.fixture(scope="module")
def projected_checkpoint(fused_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("nap") / "nap.pt"
    return fuse_checkpoint(fused_checkpoint, out, WEIGHT, random_centres(0), random_projection(1))


def test_fit_finds_the_axes_the_differences_vary_along():
    """Differences that live on 3 planted orthonormal axes (plus a little noise): the fitted
    directions span them, are orthonormal, and equal the top eigenvectors of D^T D."""
    rng = np.random.default_rng(0)
    axes = random_projection(2).directions
    d = rng.standard_normal((200, 3)) * [5.0, 3.0, 2.0] @ axes
    d += 0.01 * rng.standard_normal(d.shape)
    got = NuisanceProjection.fit(d, 3).directions
    np.testing.assert_allclose(got @ got.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.linalg.svd(got @ axes.T)[1], 1.0, atol=1e-3)  # same span
    w, v = np.linalg.eigh(d.T @ d)
    top = v[:, np.argsort(w)[::-1][:3]].T
    np.testing.assert_allclose(np.abs(np.sum(got * top, axis=1)), 1.0, atol=1e-4)
    with pytest.raises(ValueError):
        NuisanceProjection.fit(d, 0)
    with pytest.raises(ValueError):
        NuisanceProjection.fit(d[:2], 3)  # fewer differences than directions


def test_project_removes_the_directions_and_keeps_the_rest():
    proj = random_projection(3)
    u = proj.directions
    rng = np.random.default_rng(4)
    v = l2_normalize(rng.standard_normal((20, DIM))).astype(np.float32)
    got = proj.project(v)
    np.testing.assert_allclose(got @ u.T, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    want = v - (v @ u.T) @ u  # brute force, then unit norm
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    outside = proj.project(got)  # already free of the directions: unchanged
    np.testing.assert_allclose(outside, got, atol=1e-6)


@pytest.mark.parametrize("projection", [None, random_projection(1)], ids=["centres", "both"])
def test_vectors_are_centred_fused_then_projected(fused_checkpoint, tmp_path, projection):
    """Against the plain fused model: per segment, fuse(unit(c) - mu_c[domain], unit(s) -
    mu_s[domain]), then without the nuisance directions when the checkpoint has them; the
    track vector is the normalised mean of those."""
    centres = random_centres(0)
    path = fuse_checkpoint(fused_checkpoint, tmp_path / "m.pt", WEIGHT, centres, projection)
    plain = Embedder.from_checkpoint(fused_checkpoint, "cpu")
    model = Embedder.from_checkpoint(path, "cpu")
    assert plain.centres is None and plain.nuisance is None and model.centres is not None
    assert (model.nuisance is None) == (projection is None)
    for domain, seed in (("mono", 1), ("mixed", 2)):
        y = render(3, domain, seed=seed, seconds=10.0)
        before = plain.embed_audio(y, domain)
        got = model.embed_audio(y, domain)
        c = before.segment_vectors[:, :256] / np.sqrt(WEIGHT)
        s = before.segment_vectors[:, 256:] / np.sqrt(1 - WEIGHT)
        want = fuse(c - centres.cross[domain], s - centres.speaker[domain], WEIGHT)
        if projection is not None:
            want = projection.project(want)
            np.testing.assert_allclose(got.vector @ projection.directions.T, 0.0, atol=1e-5)
        np.testing.assert_allclose(got.segment_vectors, want, atol=1e-5)
        np.testing.assert_allclose(got.vector, normalized_mean(want), atol=1e-5)
        assert np.abs(got.vector - before.vector).max() > 1e-2  # the extras did something


def test_fusing_again_keeps_both_a_new_weight_or_new_centres_drop_the_projection(
    projected_checkpoint, tmp_path, caplog
):
    """The projection holds the principal axes of the fused space at its weight and centres:
    fused again at the same weight it stays; at another weight, or with new centres, it
    goes (with a warning), while the per-part centres stay valid at any weight."""

    def spec(path):
        return load_checkpoint(path)[2][FUSION_KEY]

    same = spec(fuse_checkpoint(projected_checkpoint, tmp_path / "s.pt", WEIGHT))
    assert same[CENTRES_KEY] == random_centres(0).to_dict()
    assert same[NUISANCE_KEY] == random_projection(1).to_dict()
    with caplog.at_level("WARNING", logger="model.fusion"):
        again = spec(fuse_checkpoint(projected_checkpoint, tmp_path / "w.pt", 0.5))
    assert again["weight"] == 0.5 and again[CENTRES_KEY] == random_centres(0).to_dict()
    assert NUISANCE_KEY not in again and "nuisance projection" in caplog.text
    refitted = random_projection(2)
    assert (
        spec(fuse_checkpoint(projected_checkpoint, tmp_path / "n.pt", 0.5, None, refitted))[
            NUISANCE_KEY
        ]
        == refitted.to_dict()
    )
    recentred = spec(
        fuse_checkpoint(projected_checkpoint, tmp_path / "c.pt", WEIGHT, random_centres(5))
    )
    assert NUISANCE_KEY not in recentred  # fitted on the old centres: no longer meaningful
    assert recentred[CENTRES_KEY] == random_centres(5).to_dict()
    alone = fuse_checkpoint(projected_checkpoint, tmp_path / "alone.pt", 1.0)
    assert FUSION_KEY not in load_checkpoint(alone)[2]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.pop("directions"),
        lambda d: d.update(directions=[row[:-1] for row in d["directions"]]),  # wrong dim
        lambda d: d.update(directions=[d["directions"][0]] * 2),  # not orthonormal
        lambda d: d["directions"][0].__setitem__(0, float("nan")),
        lambda d: d.update(directions=[]),  # no direction
    ],
)
def test_malformed_projection_refuses_to_load(projected_checkpoint, tmp_path, spoil):
    bad = spoiled(projected_checkpoint, NUISANCE_KEY, spoil, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="nuisance projection is malformed"):
        Embedder.from_checkpoint(bad, "cpu")


def test_nuisance_of_is_pca_of_the_performances_mono_minus_mixed(fused_checkpoint):
    """Brute force through the embedder: each performance's track vector in both domains from
    a model holding the estimated centres, the differences' top axes. A performance heard in
    one domain only adds nothing."""
    embedder = Embedder.from_checkpoint(fused_checkpoint, "cpu")
    audio = {
        (f"p{i}", d): render(i, d, seed=10 + i, seconds=6.0 + i) for i in range(4) for d in DOMAINS
    }
    audio["solo", "mono"] = render(0, "mono", seed=30, seconds=6.0)
    material = [Recording(partial(np.copy, y), d, p) for (p, d), y in audio.items()]
    parts = embed_parts(embedder, material)
    centres = centres_of(parts)
    got = nuisance_of(parts, centres, WEIGHT, 2).directions

    centred = Embedder(
        embedder.net,
        embedder.features,
        embedder.meta,
        embedder.device,
        "test",
        embedder.detector,
        embedder.speaker,
        WEIGHT,
        centres,
    )
    diffs = np.stack(
        [
            centred.embed_audio(audio[f"p{i}", "mono"], "mono").vector
            - centred.embed_audio(audio[f"p{i}", "mixed"], "mixed").vector
            for i in range(4)
        ]
    )
    w, v = np.linalg.eigh(diffs.astype(np.float64).T @ diffs)
    top = v[:, np.argsort(w)[::-1][:2]].T
    np.testing.assert_allclose(np.abs(np.sum(got * top, axis=1)), 1.0, atol=1e-4)
