"""`POST /search` (service/routers/search.py): scores and rankings against brute force over
the model's own vectors, pages, filters, and its own errors."""

from __future__ import annotations

import pytest

from service.cursors import encode_cursor
from tests.service.conftest import post_audio, runtime_of
from tests.support.live import singer_name
from tests.support.synth import VOICES


@pytest.mark.parametrize("target", ["mixed", "mono", "any"])
def test_scores_and_ranking_equal_brute_force(client, catalog, queries, target):
    """Default direction (karaoke query -> songs) and the others: every score is the cosine
    of the model's own vectors of the files, and the ranking is the brute-force one."""
    embedder = runtime_of(client).embedder
    query = queries[2, "mono"]
    q = embedder.embed_file(query.path, "mono").vector
    expected = {
        track["id"]: float(q @ embedder.embed_file(clip.path, clip.domain).vector)
        for clip, track in catalog.items()
        if target in ("any", clip.domain)
    }
    form = {} if target == "mixed" else {"target": target}
    r = post_audio(client, "/search", query.path, top_k=100, **form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["domain"] == "mono" and body["target"] == body["searched"] == target
    assert body["note"] is None and body["next_cursor"] is None
    got = {t["id"]: t["score"] for t in body["tracks"]}
    assert got == pytest.approx(expected, abs=1e-4)
    assert [t["score"] for t in body["tracks"]] == sorted(got.values(), reverse=True)


@pytest.mark.parametrize("domain", ["mono", "mixed"])
def test_a_singer_s_tracks_come_first(client, catalog, queries, domain):
    for voice in range(len(VOICES)):
        query = queries[voice, domain].path
        r = post_audio(client, "/search", query, domain=domain, target=domain, top_k=5)
        assert r.status_code == 200, r.text
        tracks = r.json()["tracks"]
        assert len(tracks) == 5 and all(t["domain"] == domain for t in tracks)
        assert [t["singer"] for t in tracks[:2]] == [singer_name(voice)] * 2


def test_pages_follow_one_another(client, catalog, queries):
    """Pages of 3 through `next_cursor` give the one-page ranking, then a last page."""
    query = queries[1, "mono"].path
    whole = post_audio(client, "/search", query, target="any", top_k=100).json()["tracks"]
    pages, cursor = [], None
    while True:
        form = {"cursor": cursor} if cursor else {}
        body = post_audio(client, "/search", query, target="any", top_k=3, **form).json()
        pages.append(body["tracks"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [t["id"] for page in pages for t in page] == [t["id"] for t in whole]
    assert [len(p) for p in pages] == [3] * (len(whole) // 3) + (
        [len(whole) % 3] if len(whole) % 3 else []
    )


def test_filters(client, catalog, queries):
    query = queries[0, "mixed"].path
    r = post_audio(client, "/search", query, singer=singer_name(3), top_k=10)
    assert {t["singer"] for t in r.json()["tracks"]} == {singer_name(3)}
    assert len(r.json()["tracks"]) == 2  # the singer's mixed tracks
    scores = [t["score"] for t in post_audio(client, "/search", query, top_k=100).json()["tracks"]]
    cut = scores[2]
    kept = post_audio(client, "/search", query, min_score=cut, top_k=100).json()["tracks"]
    assert [t["score"] for t in kept] == [s for s in scores if s >= cut]
    none = post_audio(client, "/search", query, singer="nobody").json()
    assert none["tracks"] == [] and none["note"] == "no track passes the filters"


@pytest.mark.parametrize(
    "cursor",
    ["not-a-cursor", "W1tbW1tb", encode_cursor(9_995)],
    ids=["garbage", "brackets", "past-the-end"],
)
def test_a_cursor_this_service_did_not_give_is_a_422(client, queries, cursor):
    r = post_audio(client, "/search", queries[0, "mono"].path, cursor=cursor, top_k=10)
    assert r.status_code == 422 and r.json()["code"] == "bad_cursor", r.text


@pytest.mark.parametrize("form", [{"target": "songs"}, {"min_score": 1.5}, {"top_k": 0}])
def test_a_bad_parameter_is_a_422(client, queries, form):
    r = post_audio(client, "/search", queries[0, "mono"].path, **form)
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters", r.text
