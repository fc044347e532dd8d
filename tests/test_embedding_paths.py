"""One primitive (`Embedder.embed_batch`), one vector: every path from a file to a track
vector gives the same vector for the same file, in both domains, on a fused checkpoint
(CROSS and the speaker encoder, as the default).

The reference is `embed_audio` of the decoded waveform. Against it: the file's path and its
bytes (`embed_file`), a batch of every file at once (`embed_batch`), one recording in pieces on
other threads (`embed_batch(split=...)`, what the service does on idle cores), the service's upload
path (`service.upload_embedder.UploadEmbedder`), the local indexer (`indexer.run`, vectors
read back from a real catalogue), the evaluation (`runner.collect_segments`, the track
vector of its segment embeddings) and the Ray indexer (its own test below: it starts Ray).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from catalog import Catalog
from catalog.hashing import content_hash
from indexer.run import index_source
from model.audio import load_audio
from model.concurrency import Split
from model.embedding import Embedder
from model.evaluation.runner import collect_segments
from model.evaluation.splits import EvalClip
from model.track_embedding import TrackEmbedding, track_vector
from service.settings import Settings
from service.upload_embedder import UploadEmbedder
from tests.support.executors import CountingExecutor
from tests.support.synth import VOICES, backing, sing, write

DOMAINS = ("mono", "mixed")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list:
    """Three singers' takes over a band, 7 to 9 s, in their singer's folder."""
    root = tmp_path_factory.mktemp("songs")
    return [
        write(
            root / f"singer {i}" / f"take{i}.flac",
            0.7 * sing(VOICES[i], 7.0 + i, seed=i) + backing(7.0 + i, seed=i),
        )
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def embedder(fused_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(fused_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def reference(embedder, songs) -> dict[tuple[int, str], TrackEmbedding]:
    sr = embedder.features.sample_rate
    return {
        (i, d): embedder.embed_audio(load_audio(path, sr), d)
        for i, path in enumerate(songs)
        for d in DOMAINS
    }


def same(got: np.ndarray, ref: TrackEmbedding) -> None:
    assert got.shape == ref.vector.shape == (512,)
    np.testing.assert_allclose(got, ref.vector, atol=1e-5)


def test_file_bytes_and_batch_give_the_array_s_vector(embedder, songs, reference):
    sr = embedder.features.sample_rate
    for d in DOMAINS:
        for i, path in enumerate(songs):
            same(embedder.embed_file(path, d).vector, reference[i, d])
            same(embedder.embed_file(path.read_bytes(), d).vector, reference[i, d])
        batch = embedder.embed_batch([load_audio(p, sr) for p in songs], d)
        for i, got in enumerate(batch):
            assert isinstance(got, TrackEmbedding) and got.n_segments == reference[i, d].n_segments
            same(got.vector, reference[i, d])


@pytest.mark.parametrize("parts", [2, 3, 8])
def test_a_recording_in_pieces_gives_the_same_segments_and_vector(
    embedder, songs, reference, parts
):
    sr = embedder.features.sample_rate
    with CountingExecutor(parts - 1) as helpers:
        for d in DOMAINS:
            for i, path in enumerate(songs):
                (got,) = embedder.embed_batch(
                    [load_audio(path, sr)], d, split=Split(parts, helpers)
                )
                ref = reference[i, d]
                np.testing.assert_array_equal(got.starts_s, ref.starts_s)
                assert got.flags == ref.flags and got.voiced_fraction == ref.voiced_fraction
                np.testing.assert_allclose(got.segment_vectors, ref.segment_vectors, atol=1e-6)
                same(got.vector, ref)
        assert helpers.submitted >= 2 * len(songs) * 2  # log-mel and detector pieces at least


def test_the_service_s_upload_path_gives_the_same_vector(embedder, songs, reference):
    settings = Settings(device="cpu", inference_workers=2)
    uploads = UploadEmbedder(embedder, settings, lambda domain, seconds: None)
    try:
        for d in DOMAINS:
            for i, path in enumerate(songs):
                got = asyncio.run(uploads.embed(path.read_bytes(), d))
                same(got.vector, reference[i, d])
                assert got.flags == reference[i, d].flags and got.domain == d
    finally:
        uploads.close()


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_indexer_stores_the_same_vector(embedder, songs, reference, tmp_path, domain):
    root = songs[0].parent.parent
    with Catalog.open(tmp_path / "index", dim=embedder.embed_dim) as catalog:
        report = index_source(catalog, embedder, root, domain=domain, workers=2, batch_size=8)
        assert report.n_added == len(songs) and not report.failures
        stored = {t.content_hash: catalog.get_vector(t.id) for t in catalog.iter_tracks()}
    for i, path in enumerate(songs):
        same(stored[content_hash(path)], reference[i, domain])


def test_the_evaluation_gives_the_same_vector(fused_checkpoint, songs, reference):
    clips = [
        EvalClip(f"c{i}", f"singer {i}", "model", mono_path=str(p), mixed_path=str(p))
        for i, p in enumerate(songs)
    ]
    _, segments, failures = collect_segments(
        clips, fused_checkpoint, domains=DOMAINS, cache_dir=None, device="cpu", workers=0
    )
    assert failures == {}
    for d in DOMAINS:
        for i in range(len(songs)):
            np.testing.assert_allclose(segments[d][i], reference[i, d].segment_vectors, atol=1e-5)
            same(track_vector(segments[d][i]), reference[i, d])


@pytest.mark.slow
@pytest.mark.e2e
def test_the_ray_indexer_stores_the_same_vector(
    embedder, fused_checkpoint, songs, reference, tmp_path
):
    ray = pytest.importorskip("ray")
    from indexer.ray_engine import index_source_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        root = songs[0].parent.parent
        with Catalog.open(tmp_path / "ray", dim=embedder.embed_dim) as catalog:
            report = index_source_ray(
                catalog, embedder, root, domain="mixed", checkpoint=fused_checkpoint
            )
            assert report.n_added == len(songs) and not report.failures
            stored = {t.content_hash: catalog.get_vector(t.id) for t in catalog.iter_tracks()}
    finally:
        ray.shutdown()
    for i, path in enumerate(songs):
        same(stored[content_hash(path)], reference[i, "mixed"])
