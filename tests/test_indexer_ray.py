"""`--engine ray` builds the catalogue the local engine builds, and resumes like it.

Ray runs locally (`ray.init(num_cpus=2)`) on a small generated folder; the local engine's
catalogue is the reference: same ids, same metadata, vectors within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")

from catalog import Catalog, open_catalog
from indexer.__main__ import main
from indexer.ray_engine import index_source_ray
from indexer.run import index_source
from model.embedding import Embedder
from tests.support.synth import VOICES, backing, sing, write

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SECONDS = 7.0


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    for v in range(3):
        for take in range(2):
            y = 0.7 * sing(VOICES[v], SECONDS, seed=take) + backing(SECONDS, seed=take)
            write(root / f"voice {v}" / f"take{take}.wav", y)
    (root / "voice 1" / "broken.flac").write_bytes(b"fLaC but not really" * 50)
    return root


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def embedder(random_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(random_checkpoint, device="cpu")


def contents(catalog) -> list[tuple]:
    return [
        (t.id, t.singer, t.domain, t.path, t.content_hash, t.n_segments, t.duration_s)
        for t in catalog.iter_tracks()
    ]


def test_ray_engine_builds_the_local_engines_catalogue_and_resumes(
    music, tmp_path, embedder, random_checkpoint, local_ray
):
    with Catalog.open(tmp_path / "local", dim=embedder.embed_dim) as reference:
        local = index_source(reference, embedder, music)
        expected = contents(reference)
        vectors = {t.id: reference.get_vector(t.id) for t in reference.iter_tracks()}
    assert local.n_added == 6 and len(local.failures) == 1

    with Catalog.open(tmp_path / "ray", dim=embedder.embed_dim) as catalog:
        # A job killed after three tracks: those are committed, the re-run embeds the rest.
        first = sorted(music.rglob("take0.wav"))
        held = [tmp_path / f"held{i}.wav" for i in range(len(first))]
        for path, away in zip(first, held):
            path.rename(away)
        try:
            partial = index_source_ray(catalog, embedder, music, checkpoint=random_checkpoint)
        finally:
            for path, away in zip(first, held):
                away.rename(path)
        assert partial.n_added == 3
        report = index_source_ray(catalog, embedder, music, checkpoint=random_checkpoint)
        assert report.n_skipped == 3 and report.n_added == 3
        assert [f.path.endswith("broken.flac") for f in report.failures] == [True]
        # Ids follow commit order (the held-back takes came last); everything else matches.
        got = {t[4]: t for t in contents(catalog)}
        assert sorted(t[1:] for t in got.values()) == sorted(t[1:] for t in expected)
        for ref in expected:
            track_id = got[ref[4]][0]
            np.testing.assert_allclose(catalog.get_vector(track_id), vectors[ref[0]], atol=1e-5)


def test_ray_engine_cli_in_listing_order_gives_the_same_ids(
    music, tmp_path, embedder, random_checkpoint, local_ray
):
    with Catalog.open(tmp_path / "local", dim=embedder.embed_dim) as reference:
        index_source(reference, embedder, music)
        expected = contents(reference)
        vectors = [reference.get_vector(t[0]) for t in expected]
    args = ["--checkpoint", str(random_checkpoint), "--device", "cpu", "--no-progress"]
    assert main(["--index", str(tmp_path / "ray"), "--engine", "ray", *args, str(music)]) == 1
    with Catalog.open(tmp_path / "ray", dim=None) as catalog:
        assert contents(catalog) == expected
        for (track_id, *_), vector in zip(expected, vectors):
            np.testing.assert_allclose(catalog.get_vector(track_id), vector, atol=1e-5)
    # The same job into a Qdrant catalogue: same tracks and vectors (Qdrant allocates ids).
    url = f"qdrant+local://{tmp_path / 'qdrant'}"
    assert main(["--catalog", url, "--engine", "ray", *args, str(music)]) == 1
    with open_catalog(url, dim=None) as catalog:
        assert [t[1:] for t in contents(catalog)] == [t[1:] for t in expected]
        for track, vector in zip(catalog.iter_tracks(), vectors):
            np.testing.assert_allclose(catalog.get_vector(track.id), vector, atol=1e-5)


def test_ray_engine_with_a_fused_model_gives_the_local_engines_vectors(
    music, tmp_path, fused_checkpoint, local_ray
):
    """A fused checkpoint's speaker encoder reads each segment's waveform: it travels from
    the feature tasks to the embedding actors beside the log-mel."""
    fused = Embedder.from_checkpoint(fused_checkpoint, device="cpu")
    with Catalog.open(tmp_path / "local", dim=fused.embed_dim) as reference:
        index_source(reference, fused, music)
        vectors = {t.content_hash: reference.get_vector(t.id) for t in reference.iter_tracks()}
    with Catalog.open(tmp_path / "ray", dim=fused.embed_dim) as catalog:
        report = index_source_ray(catalog, fused, music, checkpoint=fused_checkpoint)
        assert report.n_added == 6
        for track in catalog.iter_tracks():
            got = catalog.get_vector(track.id)
            assert got.shape == (512,)
            np.testing.assert_allclose(got, vectors[track.content_hash], atol=1e-5)
