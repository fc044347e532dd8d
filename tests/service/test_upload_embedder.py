"""The service's path from an upload to its vector (service/upload_embedder.py): concurrent
uploads of several lengths, formats and domains each get the vector of the model's own
`embed_file` of the same bytes; audio errors and a full queue come back as such."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from model.errors import NoVoicedSegmentError
from service.inference import OverloadedError
from tests.service.audio_bytes import encoded, silence
from tests.service.conftest import app_settings, post_audio, runtime_of, serving
from tests.support.live import render

# (voice, domain, seconds, sample rate, format): one to eight segments, both branches, auto
UPLOADS = [
    (0, "mono", 3.2, 22050, "WAV"),
    (1, "mixed", 7.0, 44100, "FLAC"),
    (2, "mono", 13.0, 16000, "WAV"),
    (3, "mixed", 24.5, 44100, "FLAC"),
    (1, "auto", 9.5, 22050, "FLAC"),
    (2, "auto", 6.0, 48000, "WAV"),
]


@pytest.fixture(scope="module")
def uploads() -> list[tuple[bytes, str]]:
    # rendered at 22.05 kHz, written as `sr`: as long as `seconds` at that rate
    return [
        (encoded(render(v, d if d != "auto" else "mixed", i, s * sr / 22050), sr, fmt), d)
        for i, (v, d, s, sr, fmt) in enumerate(UPLOADS)
    ]


def test_concurrent_uploads_equal_each_file_embedded_alone(client, uploads):
    runtime = runtime_of(client)

    async def all_at_once():
        return await asyncio.gather(*(runtime.inference.embed(data, d) for data, d in uploads))

    got = client.portal.call(all_at_once)  # in the app's event loop, as requests run
    for emb, (data, domain) in zip(got, uploads, strict=True):
        ref = runtime.embedder.embed_file(data, domain)
        assert emb.domain == ref.domain and emb.flags == ref.flags
        assert emb.n_segments == ref.n_segments and emb.duration_s == ref.duration_s
        # The service runs an upload's encoders in pieces (`UploadEmbedder._split`), whose
        # products are summed in another order than one pass's: float rounding, no more.
        np.testing.assert_allclose(emb.segment_vectors, ref.segment_vectors, atol=1e-5, rtol=0)
        np.testing.assert_allclose(emb.vector, ref.vector, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(emb.starts_s, ref.starts_s)


def test_an_audio_error_is_raised_as_such(client):
    runtime = runtime_of(client)
    with pytest.raises(NoVoicedSegmentError):
        client.portal.call(runtime.inference.embed, silence(8.0), "mono")


def test_a_full_queue_is_a_503(tmp_path_factory, random_checkpoint, uploads):
    """One inference slot and no waiting room: a second upload while the first is embedded
    is refused at once (503 `overloaded`, Retry-After), and answered once the slot is free."""
    settings = app_settings(tmp_path_factory, random_checkpoint, inference_workers=1, max_pending=0)
    long_take = uploads[3][0]
    with serving(settings) as client:
        runtime = runtime_of(client)

        async def second_while_first_runs() -> tuple[object, BaseException | None]:
            first = asyncio.ensure_future(runtime.inference.embed(long_take, "mixed"))
            while runtime.inference.pool.running == 0:
                await asyncio.sleep(0.001)
            try:
                await runtime.inference.embed(long_take, "mixed")
                refused = None
            except OverloadedError as err:
                refused = err
            return await first, refused

        first, refused = client.portal.call(second_while_first_runs)
        assert isinstance(refused, OverloadedError)
        assert first.n_segments >= 1
        # and over HTTP: the same refusal is a 503 with its code
        hold = runtime.inference.pool._slots  # take the only slot, as a running upload does
        client.portal.call(hold.acquire)
        try:
            r = post_audio(client, "/identify", uploads[0][0])
        finally:
            hold.release()
        assert r.status_code == 503 and r.json()["code"] == "overloaded", r.text
        assert r.headers["Retry-After"] == "1"
        assert post_audio(client, "/identify", uploads[0][0]).status_code == 200
