"""`GET /tracks`, `GET /tracks/{id}`, `POST /tracks`, `DELETE /tracks/{id}`
(service/routers/tracks.py and service/track_writes.py)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from service.app import create_app
from tests.service.audio_bytes import encoded
from tests.service.conftest import KEY, TestClient, app_settings, post_audio, runtime_of
from tests.support.live import make_clip, render, singer_name
from tests.support.synth import VOICES


def test_pages_of_tracks_by_id_with_filters(client, catalog):
    everything = sorted(t["id"] for t in catalog.values())
    seen, after = [], 0
    while True:
        body = client.get("/tracks", params={"after": after, "limit": 5}).json()
        seen += [t["id"] for t in body["tracks"]]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert seen == everything
    mine = client.get("/tracks", params={"singer": singer_name(1), "domain": "mixed"}).json()
    assert [(t["singer"], t["domain"]) for t in mine["tracks"]] == [(singer_name(1), "mixed")] * 2
    assert mine["next_after"] is None


def test_a_track_is_what_post_answered(client, catalog):
    clip, posted = next(iter(catalog.items()))
    got = client.get(f"/tracks/{posted['id']}")
    assert got.status_code == 200
    assert got.json() == {k: v for k, v in posted.items() if k != "quality"}
    assert posted["singer"] == clip.singer and posted["domain"] == clip.domain
    assert posted["title"] == clip.path.stem and posted["path"] is None
    assert posted["playable"] is True  # its upload is kept (SINGER_STORE_UPLOADS)
    assert posted["quality"]["n_segments"] == posted["n_segments"] in (1, 2)


def test_posting_the_same_file_again_is_idempotent(client, catalog):
    clip, posted = next(iter(catalog.items()))
    again = post_audio(client, "/tracks", clip.path, KEY, singer=clip.singer, domain=clip.domain)
    assert again.status_code == 200 and again.json()["id"] == posted["id"]
    assert again.json()["quality"] is None
    other = post_audio(client, "/tracks", clip.path, KEY, singer="someone", domain=clip.domain)
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "duplicate_track" and other.json()["track_id"] == posted["id"]


def test_add_then_delete_changes_answers(client, catalog, queries):
    """The query itself, filed under a new singer, becomes the best match (cosine 1);
    deleting it restores the previous answer, and the id is gone."""
    query = queries[0, "mono"].path
    before = post_audio(client, "/identify", query).json()["singers"]
    added = post_audio(
        client, "/tracks", query, KEY, singer="the query", domain="mono", title="t", external_id="x"
    )
    assert added.status_code == 201, added.text
    track = added.json()
    assert added.headers["location"] == f"/tracks/{track['id']}"
    assert (track["title"], track["external_id"]) == ("t", "x")
    top = post_audio(client, "/identify", query).json()["singers"][0]
    assert top["name"] == "the query" and top["score"] == pytest.approx(1.0, abs=1e-5)
    deleted = client.delete(f"/tracks/{track['id']}", headers=KEY)
    assert deleted.status_code == 200
    assert deleted.json() == {k: v for k, v in track.items() if k != "quality"}
    assert post_audio(client, "/identify", query).json()["singers"] == before
    for r in (
        client.get(f"/tracks/{track['id']}"),
        client.delete(f"/tracks/{track['id']}", headers=KEY),
    ):
        assert r.status_code == 404 and r.json()["code"] == "track_not_found"


def test_concurrent_uploads_of_one_file_add_one_track(client, catalog, tmp_path):
    clip = make_clip(tmp_path, 2, "mono", seed=11)
    form = {"singer": "twice", "domain": "mono"}

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            files = {"file": (clip.path.name, clip.path.read_bytes(), "audio/wav")}
            posts = [c.post("/tracks", files=files, data=form, headers=KEY) for _ in range(4)]
            return list(await asyncio.gather(*posts))

    answers = client.portal.call(both)  # in the app's own event loop
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert client.delete(f"/tracks/{answers[0].json()['id']}", headers=KEY).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 401, "unauthorized"), ({"X-API-Key": "wrong"}, 401, "unauthorized")],
)
def test_writes_need_the_key(client, queries, headers, status, code):
    r = post_audio(client, "/tracks", queries[0, "mono"].path, headers, singer="s", domain="mono")
    assert r.status_code == status and r.json()["code"] == code
    assert r.headers["WWW-Authenticate"] == "X-API-Key"
    r = client.delete("/tracks/1", headers=headers)
    assert r.status_code == status and r.json()["code"] == code


def test_writes_are_disabled_without_a_key(tmp_path_factory, random_checkpoint):
    """No key configured and no local mode: 403, before the model is even loaded (the app's
    lifespan is not run here)."""
    settings = app_settings(tmp_path_factory, random_checkpoint, api_key=None)
    client = TestClient(create_app(settings))
    r = client.post(
        "/tracks", files={"file": ("a.wav", b"x")}, data={"singer": "s", "domain": "mono"}
    )
    assert r.status_code == 403 and r.json()["code"] == "writes_disabled", r.text
    assert client.delete("/tracks/1").json()["code"] == "writes_disabled"


@pytest.mark.parametrize(
    "form",
    [{"singer": "  ", "domain": "mono"}, {"singer": "s", "domain": "auto"}, {"domain": "mono"}],
    ids=["blank-singer", "auto-is-not-a-track-domain", "no-singer"],
)
def test_a_bad_field_is_a_422(client, queries, form):
    r = post_audio(client, "/tracks", queries[0, "mono"].path, KEY, **form)
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters", r.text


@pytest.mark.parametrize("track_id", ["0", "-1", "abc", str(2**63)])
def test_a_bad_track_id_is_a_422(client, track_id):
    r = client.get(f"/tracks/{track_id}")
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters", r.text


def test_a_method_not_served_is_a_405_that_lists_the_others(client):
    r = client.put("/tracks/1")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    assert r.headers["Allow"] == "GET, DELETE"


def test_a_malformed_body_is_a_400(client):
    r = client.post(
        "/tracks",
        content=b"--nope\r\ngarbage",
        headers={**KEY, "Content-Type": "multipart/form-data"},  # no boundary
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_body", r.text


def test_a_body_over_the_limit_is_a_413(client):
    limit = runtime_of(client).settings.max_upload_bytes
    r = post_audio(client, "/identify", b"\0" * (limit + 1))
    assert r.status_code == 413 and r.json()["code"] == "upload_too_large", r.text


def test_uploaded_tracks_are_embedded_as_the_file_would_be(client, catalog):
    """The stored vector of an upload is the model's vector of that file (upload path
    against file path), for a FLAC of another sample rate too."""
    runtime = runtime_of(client)
    y = render(len(VOICES) - 1, "mixed", seed=21, seconds=8.0)
    data = encoded(y, sr=44100, fmt="FLAC")
    r = post_audio(client, "/tracks", data, KEY, singer="flac", domain="mixed")
    assert r.status_code == 201, r.text
    stored = runtime.catalog.get_vector(r.json()["id"])
    np.testing.assert_allclose(stored, runtime.embedder.embed_file(data, "mixed").vector, atol=1e-6)
    assert client.delete(f"/tracks/{r.json()['id']}", headers=KEY).status_code == 200
