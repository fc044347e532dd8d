"""`POST /identify` (service/routers/identify.py): rankings against brute force over the
model's own vectors, the timeline, and every error an upload can get."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.service.audio_bytes import encoded, silence
from tests.service.conftest import post_audio, runtime_of
from tests.support.live import render, singer_name
from tests.support.synth import VOICES


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("domain", ["mono", "mixed"])
def test_the_singer_ranks_first(client, catalog, queries, domain):
    for voice in range(len(VOICES)):
        r = post_audio(client, "/identify", queries[voice, domain].path, domain=domain, top_k=3)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["singers"][0]["name"] == singer_name(voice)
        assert len(body["singers"]) == 3
        assert body["domain"] == body["models_domain"] == body["requested_domain"] == domain
        assert body["n_segments"] == body["quality"]["n_segments"] == len(body["segments"])
        assert body["duration_s"] == pytest.approx(7.0, abs=0.01)
        scores = [s["score"] for s in body["singers"]]
        assert scores == sorted(scores, reverse=True)
        assert all(s["n_tracks"] == 2 for s in body["singers"])
        assert body["timeline"] is None


def test_scores_are_cosines_to_the_singer_models(client, catalog, queries):
    """A singer model is the normalised mean of the singer's normalised track vectors in one
    domain; `models=mono` ranks those for a mixed query (the model's own vectors, from the
    files, against what the service computed from the uploads)."""
    embedder = runtime_of(client).embedder
    query = queries[1, "mixed"]
    q = embedder.embed_file(query.path, "mixed").vector
    models: dict[str, list[np.ndarray]] = {}
    for clip in catalog:
        if clip.domain == "mono":
            models.setdefault(clip.singer, []).append(embedder.embed_file(clip.path, "mono").vector)
    expected = {name: float(q @ unit(np.mean(vs, axis=0))) for name, vs in models.items()}
    r = post_audio(client, "/identify", query.path, domain="mixed", models="mono", top_k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["models_domain"] == "mono" and body["domain"] == "mixed"
    assert {s["name"]: s["score"] for s in body["singers"]} == pytest.approx(expected, abs=1e-4)


def merged(segments: list[dict]) -> list[tuple[float, float, str, int]]:
    """Reference timeline without a calibration: runs of segments with one best singer."""
    spans: list[tuple[float, float, str, int]] = []
    for seg in segments:
        if spans and spans[-1][2] == seg["singer"]:
            start, _, singer, n = spans[-1]
            spans[-1] = (start, seg["end_s"], singer, n + 1)
        else:
            spans.append((seg["start_s"], seg["end_s"], seg["singer"], 1))
    return spans


def test_segments_name_their_singer_and_the_timeline_merges_them(client, catalog):
    """A take of two voices, one after the other: each segment names its best singer alone
    (the one whose model scores highest against that segment's vector), and the timeline
    merges consecutive segments with one answer (no calibration: no `unknown`)."""
    runtime = runtime_of(client)
    first, second = render(0, "mono", seed=7, seconds=9.0), render(2, "mono", seed=8, seconds=9.0)
    r = post_audio(client, "/identify", encoded(np.concatenate([first, second])), timeline="true")
    assert r.status_code == 200, r.text
    body = r.json()
    segments = body["segments"]
    assert len(segments) == body["n_segments"] >= 2
    assert [s["start_s"] for s in segments] == sorted(s["start_s"] for s in segments)
    emb = runtime.embedder.embed_audio(np.concatenate([first, second]), "mono")
    for seg, vec in zip(segments, emb.segment_vectors, strict=True):
        best = runtime.catalog.search_singers(unit(vec), 1, "mono")[0]
        assert seg["singer"] == best.singer.name
        assert seg["score"] == pytest.approx(best.score, abs=1e-4)
    assert body["calibrated"] is False and body["verdict"] is None
    spans = [(s["start_s"], s["end_s"], s["singer"], s["n_windows"]) for s in body["timeline"]]
    assert spans == merged(segments)
    assert all(s["confidence"] is None for s in body["timeline"])


def test_domain_auto_answers_with_the_branch_it_chose(client, catalog, queries):
    r = post_audio(client, "/identify", queries[2, "mono"].path, domain="auto")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["requested_domain"] == "auto" and body["domain"] in ("mono", "mixed")
    assert body["models_domain"] == body["domain"]


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: b"definitely not audio" * 50, 415, "unsupported_format"),
        (lambda: b"", 422, "invalid_audio"),
        (lambda: encoded(render(0, "mono", seed=1, seconds=1.0)), 422, "audio_too_short"),
        (lambda: silence(8.0), 422, "no_voiced_segment"),
        (lambda: silence(601.0, sr=8000), 422, "audio_too_long"),
        (lambda: silence(4.0, sr=2000), 422, "unsupported_audio_params"),
        (
            lambda: encoded(np.full(22050 * 4, np.nan, np.float32), subtype="FLOAT"),
            422,
            "invalid_audio",
        ),
    ],
    ids=["garbage", "empty", "short", "silence", "too-long", "2-khz", "nan"],
)
def test_an_unusable_upload_is_a_4xx_with_its_code(client, make, status, code):
    r = post_audio(client, "/identify", make())
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    if code == "audio_too_long":
        assert r.json()["max_duration_s"] == runtime_of(client).settings.max_query_seconds
    if code == "unsupported_format":
        assert "wav" in r.json()["supported_formats"]


@pytest.mark.parametrize(
    "form", [{"top_k": 0}, {"top_k": 101}, {"domain": "song"}, {"models": "any"}]
)
def test_a_bad_parameter_is_a_422(client, queries, form):
    r = post_audio(client, "/identify", queries[0, "mono"].path, **form)
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters", r.text


def test_a_missing_file_is_a_422(client):
    r = client.post("/identify", data={"top_k": "3"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters", r.text


def out_of_memory(module: torch.nn.Module, args: tuple) -> None:
    """A forward pre-hook: the device has no room for this pass (the error CUDA raises)."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_device_out_of_memory_is_a_503_and_the_service_goes_on(client, catalog, queries):
    clip = queries[0, "mono"]
    hook = runtime_of(client).embedder.net.register_forward_pre_hook(out_of_memory)
    try:
        r = post_audio(client, "/identify", clip.path)
    finally:
        hook.remove()
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "device_out_of_memory" and "out of memory" in r.json()["detail"]
    assert r.headers["Retry-After"] == "1"
    r = post_audio(client, "/identify", clip.path)
    assert r.status_code == 200 and r.json()["singers"][0]["name"] == clip.singer
