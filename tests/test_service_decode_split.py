"""The service decodes an upload in pieces on idle cores, runs its features, detector and
encoders in pieces there too, and answers as if it had not.

The service's own embedding path (`UploadEmbedder`: inference pool, decode helper threads),
real decoding and a random-weight model; `embed_file` (whole decoding, one piece) is the
reference: the same segments, vectors within float rounding (a piece's matrix products are
summed in another order).
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import soundfile as sf

from model.audio import load_audio
from service import performance
from service.telemetry import Telemetry
from service.upload_embedder import UploadEmbedder
from tests.support.executors import CountingExecutor, piece_threads
from tests.support.live import live_settings, render


def flac(y: np.ndarray, sr: int = 22050) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="FLAC")
    return buf.getvalue()


def uploads_embedder(settings) -> UploadEmbedder:
    from model.embedding import Embedder

    embedder = Embedder.from_checkpoint(settings.checkpoint, settings.device)
    return UploadEmbedder(embedder, settings, Telemetry().observe_embedding)


def test_uploads_decoded_in_pieces_embed_as_whole(tmp_path_factory, random_checkpoint, monkeypatch):
    settings = live_settings(
        tmp_path_factory, random_checkpoint, decode_processes=0, decode_parts=3
    )
    runtime = uploads_embedder(settings)
    assert runtime.decode_helpers is not None
    monkeypatch.setattr(performance, "cores", lambda: 4)  # a 4-core machine, whatever this is
    runtime.decode_helpers = counting = CountingExecutor(2)
    uploads = [(flac(render(1, "mono", seed=1, seconds=24.5)), "mono")]
    uploads.append((flac(render(2, "mixed", seed=2, seconds=13.0)), "mixed"))
    try:
        for data, domain in uploads:  # one at a time: the other cores are idle
            got = asyncio.run(runtime.embed(data, domain))
            ref = runtime.embedder.embed_file(data, domain)
            np.testing.assert_array_equal(got.starts_s, ref.starts_s)
            np.testing.assert_allclose(got.vector, ref.vector, atol=1e-5)
            np.testing.assert_allclose(got.segment_vectors, ref.segment_vectors, atol=1e-5)
            assert got.flags == ref.flags
            # Under load (no idle core) the same pieces run one after another, in this
            # thread: the same answer, bit for bit, whatever the load.
            y = load_audio(data, runtime.embedder.features.sample_rate)
            (loaded,) = runtime.embedder.embed_batch([y], domain, split=runtime._split(1))
            np.testing.assert_array_equal(loaded.segment_vectors, got.segment_vectors)
            np.testing.assert_array_equal(loaded.vector, got.vector)
        # Decoding: 2 pieces elsewhere for the first upload, 1 for the second; then, in 3
        # pieces (1 torch thread), at least 2 elsewhere of each upload's log-mel frames and
        # of its detector windows (its segments too, where it has 2 or more).
        assert counting.submitted >= 3 + 2 * (2 + 2)
        assert runtime._split(3) == (3, counting) and runtime._split(1) == (3, None)
        # Pieces: the upload's share of the cores among running embeddings, at most 3.
        for running, parts in [(1, 3), (2, 2), (3, 1), (4, 1), (6, 1)]:
            assert performance.decode_parts(runtime.max_decode_parts, running) == parts
    finally:
        runtime.close()


def test_decoding_processes_split_in_their_workers(
    tmp_path_factory, random_checkpoint, monkeypatch
):
    """With decoding processes the pieces run on the worker's threads (no helpers here)."""
    settings = live_settings(
        tmp_path_factory, random_checkpoint, decode_processes=1, decode_parts=2
    )
    runtime = uploads_embedder(settings)
    try:
        assert runtime.decode_helpers is None and runtime.decoder is not None
        monkeypatch.setattr(performance, "cores", lambda: 2)
        data = flac(render(0, "mono", seed=3, seconds=24.5))
        got = asyncio.run(runtime.embed(data, "mono"))
        np.testing.assert_array_equal(got.vector, runtime.embedder.embed_file(data, "mono").vector)
        assert runtime.decoder.call(piece_threads) >= 1
    finally:
        runtime.close()


def test_no_helpers_when_splitting_is_off(tmp_path_factory, random_checkpoint):
    settings = live_settings(tmp_path_factory, random_checkpoint, decode_parts=1)
    runtime = uploads_embedder(settings)
    try:
        assert runtime.decode_helpers is None and runtime.max_decode_parts == 1
    finally:
        runtime.close()
