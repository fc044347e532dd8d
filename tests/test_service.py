"""The HTTP service end to end: a real uvicorn on a free port, a catalogue filled through
`POST /tracks` with synthetic singers (see tests/service_live.py), and answers compared with
the expected singer and with brute-force numpy over the library's own embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest

from model.embedding import Embedder
from tests.support.live import (
    API_KEY,
    LiveServer,
    add_clip,
    live_settings,
    make_clip,
    make_corpus,
    singer_name,
    upload,
)
from tests.support.synth import VOICES

pytestmark = pytest.mark.e2e

QUERY_SEED = 5  # a take that is not in the catalogue


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint, max_upload_mb=4)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def catalog(client, tmp_path_factory):
    """All voices, both domains, two takes each, added over HTTP: {path: track json}."""
    clips = make_corpus(tmp_path_factory.mktemp("corpus"))
    return {clip: add_clip(client, clip) for clip in clips}


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    d = tmp_path_factory.mktemp("queries")
    return {
        (v, dom): make_clip(d, v, dom, QUERY_SEED)
        for v in range(len(VOICES))
        for dom in ("mono", "mixed")
    }


@pytest.fixture(scope="module")
def reference(random_checkpoint):
    return Embedder.from_checkpoint(random_checkpoint, device="cpu")


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("domain", ["mono", "mixed"])
def test_identify_ranks_the_singer_first(client, catalog, queries, domain):
    for voice in range(len(VOICES)):
        r = upload(client, "/identify", queries[voice, domain].path, domain=domain, top_k=3)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["singers"][0]["name"] == singer_name(voice)
        assert len(body["singers"]) == 3
        assert body["domain"] == body["models_domain"] == domain
        # 1 or 2 of the 7-s take's segments: the voice detector judges the synthetic voices
        assert body["n_segments"] == body["quality"]["n_segments"] in (1, 2)
        assert body["duration_s"] == pytest.approx(7.0, abs=0.01)
        scores = [s["score"] for s in body["singers"]]
        assert scores == sorted(scores, reverse=True)
        assert all(s["n_tracks"] == 2 for s in body["singers"])


@pytest.mark.parametrize("domain", ["mono", "mixed"])
def test_search_finds_the_singers_tracks_first(client, catalog, queries, domain):
    for voice in range(len(VOICES)):
        r = upload(
            client, "/search", queries[voice, domain].path, domain=domain, target=domain, top_k=5
        )
        assert r.status_code == 200, r.text
        tracks = r.json()["tracks"]
        assert len(tracks) == 5
        assert [t["singer"] for t in tracks[:2]] == [singer_name(voice)] * 2
        assert all(t["domain"] == domain for t in tracks)


@pytest.mark.parametrize("target", ["mixed", "mono", "any"])
def test_search_scores_equal_brute_force(client, catalog, queries, reference, target):
    """Default direction (karaoke query -> songs) and the others: every returned score is the
    cosine of the library's own embeddings, and the ranking is the brute-force one."""
    query = queries[2, "mono"]
    q = reference.embed_file(query.path, "mono").vector
    expected = {
        track["id"]: float(q @ reference.embed_file(clip.path, clip.domain).vector)
        for clip, track in catalog.items()
        if target in ("any", clip.domain)
    }
    r = upload(
        client,
        "/search",
        query.path,
        top_k=100,
        **({} if target == "mixed" else {"target": target}),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["domain"] == "mono" and body["target"] == target
    got = {t["id"]: t["score"] for t in body["tracks"]}
    assert set(got) == set(expected)
    for track_id, score in got.items():
        assert score == pytest.approx(expected[track_id], abs=1e-4)
    assert [t["score"] for t in body["tracks"]] == sorted(got.values(), reverse=True)


def test_identify_scores_equal_singer_models(client, catalog, queries, reference):
    """Singer model = normalised mean of the singer's normalised track vectors (per domain)."""
    query = queries[1, "mixed"]
    q = reference.embed_file(query.path, "mixed").vector
    models: dict[str, list[np.ndarray]] = {}
    for clip in catalog:
        if clip.domain == "mono":
            vector = reference.embed_file(clip.path, "mono").vector
            models.setdefault(clip.singer, []).append(vector)
    expected = {name: float(q @ unit(np.mean(vs, axis=0))) for name, vs in models.items()}
    r = upload(client, "/identify", query.path, domain="mixed", models="mono", top_k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["models_domain"] == "mono"
    assert {s["name"]: s["score"] for s in body["singers"]} == pytest.approx(expected, abs=1e-4)


def test_flac_upload_equals_wav_upload(client, catalog, queries, tmp_path):
    import soundfile as sf

    wav = queries[3, "mono"].path
    y, sr = sf.read(wav, dtype="int16")
    flac = tmp_path / "q.flac"
    sf.write(flac, y, sr, subtype="PCM_16")
    a = upload(client, "/identify", wav).json()
    b = upload(client, "/identify", flac).json()
    assert [s["name"] for s in a["singers"]] == [s["name"] for s in b["singers"]]
    assert [s["score"] for s in a["singers"]] == pytest.approx(
        [s["score"] for s in b["singers"]], abs=1e-5
    )


def test_singers_are_paginated(client, catalog):
    first = client.get("/singers", params={"limit": 3}).json()
    rest = client.get("/singers", params={"offset": 3, "limit": 3}).json()
    assert first["total"] == rest["total"] == len(VOICES)
    assert len(first["singers"]) == 3 and len(rest["singers"]) == 1
    names = {s["name"] for s in first["singers"] + rest["singers"]}
    assert names == {singer_name(v) for v in range(len(VOICES))}
    assert all(s["n_tracks"] == {"mono": 2, "mixed": 2} for s in first["singers"])


def test_get_track_returns_what_post_returned(client, catalog):
    clip, posted = next(iter(catalog.items()))
    got = client.get(f"/tracks/{posted['id']}")
    # The stored track is what POST answered, less the upload's `quality`.
    assert got.status_code == 200 and got.json() == {
        k: v for k, v in posted.items() if k != "quality"
    }
    assert posted["singer"] == clip.singer and posted["domain"] == clip.domain
    assert posted["title"] == clip.path.stem and posted["n_segments"] in (1, 2)


def test_posting_the_same_file_again_is_idempotent(client, catalog):
    clip, posted = next(iter(catalog.items()))
    again = upload(
        client,
        "/tracks",
        clip.path,
        headers={"X-API-Key": API_KEY},
        singer=clip.singer,
        domain=clip.domain,
    )
    assert again.status_code == 200 and again.json()["id"] == posted["id"]
    other = upload(
        client,
        "/tracks",
        clip.path,
        headers={"X-API-Key": API_KEY},
        singer="someone else",
        domain=clip.domain,
    )
    assert other.status_code == 409 and other.json()["track_id"] == posted["id"]


def test_add_then_delete_changes_answers(client, catalog, queries):
    """The query file itself, filed under a new singer, becomes the best match (cosine 1);
    deleting it restores the previous answer and the id is gone."""
    query = queries[0, "mono"].path
    before = upload(client, "/identify", query).json()["singers"]
    added = upload(
        client, "/tracks", query, headers={"X-API-Key": API_KEY}, singer="the query", domain="mono"
    )
    assert added.status_code == 201, added.text
    assert added.headers["location"] == f"/tracks/{added.json()['id']}"
    top = upload(client, "/identify", query).json()["singers"][0]
    assert top["name"] == "the query" and top["score"] == pytest.approx(1.0, abs=1e-5)
    assert top["n_tracks"] == 1

    deleted = client.delete(f"/tracks/{added.json()['id']}", headers={"X-API-Key": API_KEY})
    stored = {k: v for k, v in added.json().items() if k != "quality"}
    assert deleted.status_code == 200 and deleted.json() == stored
    assert upload(client, "/identify", query).json()["singers"] == before
    assert client.get(f"/tracks/{added.json()['id']}").status_code == 404
    again = client.delete(f"/tracks/{added.json()['id']}", headers={"X-API-Key": API_KEY})
    assert again.status_code == 404 and again.json()["code"] == "track_not_found"


def test_readyz_metrics_and_docs(client, catalog, random_checkpoint):
    from model.checkpoint import checkpoint_id

    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checkpoint_id"] == checkpoint_id(random_checkpoint)
    assert ready.json()["device"] == "cpu"
    upload(client, "/identify", next(iter(catalog)).path)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'singer_http_requests_total{method="POST",route="/identify",status="200"}' in text
    assert (
        'singer_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/identify"}'
        in text
    )
    assert 'singer_catalog_tracks{domain="mono"} 8.0' in text
    assert f"singer_catalog_singers {float(len(VOICES))}" in text
    assert 'singer_embedding_seconds_count{domain="mono"}' in text
    assert "singer_ready 1.0" in text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/identify", "/search", "/singers", "/tracks", "/tracks/{track_id}"} <= set(paths)
