"""Cross-request batching gives each request exactly what embedding it alone gives.

Real model (random CROSS weights), real decoding, the service's own `Runtime` (inference pool +
`SegmentBatcher`) and a real uvicorn for the out-of-memory answer.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import soundfile as sf
import torch

from model.embedding import Embedder, TrackEmbedding
from model.errors import NoVoicedSegmentError
from service.inference import SegmentBatcher
from service.metrics import Metrics
from service.runtime import Runtime
from tests.support.batching import embed_audio_together, embed_together
from tests.support.live import LiveServer, add_clip, live_settings, make_clip, render, upload

# (voice, domain, seconds): lengths from one to eight segments, both branches.
REQUESTS = [(0, "mono", 3.2), (1, "mixed", 7.0), (2, "mono", 13.0), (3, "mixed", 24.5)]
REQUESTS += [(1, "mono", 9.5), (2, "mixed", 4.1)]


@pytest.fixture(scope="module")
def embedder(random_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(random_checkpoint, "cpu")


@pytest.fixture(scope="module")
def takes() -> list[np.ndarray]:
    return [render(v, d, seed=i, seconds=s) for i, (v, d, s) in enumerate(REQUESTS)]


def assert_same_embedding(got: TrackEmbedding, ref: TrackEmbedding) -> None:
    assert got.n_segments == ref.n_segments
    np.testing.assert_allclose(got.segment_vectors, ref.segment_vectors, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.vector, ref.vector, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got.starts_s, ref.starts_s)
    np.testing.assert_array_equal(got.ends_s, ref.ends_s)
    np.testing.assert_array_equal(got.voice, ref.voice)
    assert got.voiced_fraction == ref.voiced_fraction
    assert got.duration_s == ref.duration_s


def test_concurrent_requests_batched_equal_each_embedded_alone(embedder, takes):
    alone = [embedder.embed_audio(y, d) for y, (_, d, _) in zip(takes, REQUESTS, strict=True)]
    selections = [embedder.select(y) for y in takes]
    total = sum(len(s) for s in selections)
    # The batch waits (up to 10 s) for every request: one pass per branch, whatever the order.
    batcher = SegmentBatcher(embedder.encode, max_segments=total, max_wait_s=10.0)
    got = embed_together(batcher, selections, [d for _, d, _ in REQUESTS])
    assert (batcher.batches, batcher.batched_requests) == (2, len(takes))  # one per branch
    for g, ref in zip(got, alone, strict=True):
        assert_same_embedding(g, ref)


def test_concurrent_waveforms_chosen_and_embedded_together_equal_each_alone(embedder, takes):
    """With `select` (the CUDA default), one selection pass for every waveform of the batch;
    a waveform with no singing is refused for its request only."""
    silent = np.zeros(22050 * 4, np.float32)
    waveforms, domains = [*takes, silent], [d for _, d, _ in REQUESTS] + ["mono"]
    calls = []

    def select(ys, ds):
        calls.append(len(ys))
        return embedder.select_many(ys, domains=ds)

    batcher = SegmentBatcher(
        embedder.encode,
        max_segments=10_000,
        max_wait_s=10.0,
        select=select,
        segment_samples=embedder.features.min_samples,
    )
    got = embed_audio_together(batcher, waveforms, domains)
    assert calls == [len(waveforms)]  # one selection pass
    assert (batcher.batches, batcher.batched_requests) == (2, len(takes))
    for g, y, d in zip(got[:-1], takes, domains, strict=False):
        assert isinstance(g, TrackEmbedding)
        ref = embedder.embed_audio(y, d)
        assert_same_embedding(g, ref)
        assert (g.flags, g.domain_score) == (ref.flags, pytest.approx(ref.domain_score))
    assert isinstance(got[-1], NoVoicedSegmentError)


def test_request_larger_than_a_batch_runs_alone_in_chunks(embedder, takes):
    selection = embedder.select(takes[3])  # eight segments
    batcher = SegmentBatcher(
        lambda selections, domain: embedder.encode(selections, domain, batch_size=3),
        max_segments=3,
        max_wait_s=0.0,
    )
    vecs = batcher.embed(selection, "mixed")
    ref = embedder.embed_segments(selection.features, "mixed")
    np.testing.assert_allclose(vecs, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("decode_processes", "batch_features", "checkpoint"),
    [
        (0, "off", "random_checkpoint"),
        (2, "off", "random_checkpoint"),
        (0, "on", "random_checkpoint"),
        (2, "on", "random_checkpoint"),
        (0, "off", "fused_checkpoint"),
        (2, "on", "fused_checkpoint"),
    ],
)
def test_service_runtime_batched_equals_unbatched(
    request, tmp_path, takes, decode_processes, batch_features, checkpoint
):
    """The service's own embedding path (pool threads + batcher, decoding in the threads or
    in worker processes as on CUDA, segments chosen per request or in the batch as on CUDA)
    against `embed_file` alone, with concurrent uploads of different lengths and domains;
    for a CROSS model and a fused one (speaker encoder beside it)."""
    from service.settings import Settings

    uploads = []
    for y in takes:
        buf = io.BytesIO()
        sf.write(buf, y, 22050, format="FLAC")
        uploads.append(buf.getvalue())
    settings = Settings(
        index_dir=tmp_path / "index",
        checkpoint=request.getfixturevalue(checkpoint),
        device="cpu",
        batching="on",
        batch_max_wait_ms=50,
        inference_workers=3,
        torch_threads=1,
        decode_processes=decode_processes,
        batch_features=batch_features,
    )
    runtime = Runtime(settings, Metrics())
    runtime.load()
    assert runtime.batcher is not None
    assert (runtime.batcher.select is not None) == (batch_features == "on")

    # Each upload as its domain, and the first two also as `auto` (segments chosen in the
    # request's thread, the branch from them, then the batch).
    asked = [(u, d) for u, (_, d, _) in zip(uploads, REQUESTS, strict=True)]
    asked += [(uploads[0], "auto"), (uploads[1], "auto")]

    async def all_at_once() -> list[TrackEmbedding]:
        return await asyncio.gather(*[runtime.embed(u, d) for u, d in asked])

    try:
        got = asyncio.run(all_at_once())
    finally:
        runtime.close()
    assert runtime.batcher.batched_requests == len(asked)
    for g, (u, d) in zip(got, asked, strict=True):
        ref = runtime.embedder.embed_file(u, d)
        assert_same_embedding(g, ref)
        assert g.domain == ref.domain and g.flags == ref.flags
        assert g.domain == d if d != "auto" else g.domain in ("mono", "mixed")


def out_of_memory(module: torch.nn.Module, args: tuple) -> None:
    """A forward pre-hook: the device has no room for this pass (the error CUDA raises)."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.e2e
@pytest.mark.parametrize("batching", ["on", "off"])
def test_device_out_of_memory_is_a_503_and_the_service_goes_on(
    tmp_path_factory, random_checkpoint, batching
):
    settings = live_settings(tmp_path_factory, random_checkpoint, batching=batching)
    clip = make_clip(tmp_path_factory.mktemp("oom"), 0, "mono", 0)
    with LiveServer(settings) as server, server.client() as client:
        add_clip(client, clip)
        hook = server.app.state.runtime.embedder.net.register_forward_pre_hook(out_of_memory)
        try:
            r = upload(client, "/identify", clip.path)
        finally:
            hook.remove()
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "device_out_of_memory"
        assert "out of memory" in r.json()["detail"]
        assert r.headers["Retry-After"] == "1"
        r = upload(client, "/identify", clip.path)
        assert r.status_code == 200, r.text
        assert r.json()["singers"][0]["name"] == clip.singer
