"""Queries that stay correct while the catalogue changes, over real connections to a real
uvicorn (the inference pool's bounds: tests/service/test_inference.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.live import (
    API_KEY,
    LiveServer,
    add_clip,
    live_settings,
    make_clip,
    singer_name,
    upload,
)
from tests.support.synth import VOICES

pytestmark = pytest.mark.e2e

KEY = {"X-API-Key": API_KEY}


def same_singers(a: list[dict], b: list[dict]) -> bool:
    return [(s["name"], s["n_tracks"]) for s in a] == [(s["name"], s["n_tracks"]) for s in b] and [
        s["score"] for s in a
    ] == pytest.approx([s["score"] for s in b], abs=1e-6)


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint, inference_workers=2)) as srv:
        yield srv


def test_queries_stay_correct_while_tracks_come_and_go(server, tmp_path):
    """Readers see the stable tracks with exactly their baseline scores, in score order,
    plus at most churn tracks that existed at some point; the writer's tracks are all gone
    afterwards and the answers are the baseline again."""
    with server.client() as client:
        stable = [
            add_clip(client, make_clip(tmp_path, v, "mono", s))
            for v in range(len(VOICES))
            for s in (0, 1)
        ]
    stable_ids = {t["id"] for t in stable}
    query = make_clip(tmp_path / "q", 0, "mono", 5).path
    churn_clips = [make_clip(tmp_path / "churn", v, "mono", 9) for v in (1, 2, 3)]

    def search(client):
        r = upload(client, "/search", query, target="mono", top_k=50)
        assert r.status_code == 200, r.text
        return r.json()["tracks"]

    def identify(client):
        r = upload(client, "/identify", query, top_k=10)
        assert r.status_code == 200, r.text
        return r.json()["singers"]

    with server.client() as client:
        baseline = {t["id"]: t["score"] for t in search(client)}
        baseline_singers = identify(client)
    assert set(baseline) == stable_ids

    created: set[int] = set()
    seen_unknown: set[int] = set()
    stop = threading.Event()

    def writer():
        with server.client() as client:
            for cycle in range(4):
                ids = []
                for clip in churn_clips:
                    r = upload(
                        client,
                        "/tracks",
                        clip.path,
                        headers=KEY,
                        singer=f"churn-{cycle}",
                        domain="mono",
                    )
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["id"])
                    created.add(ids[-1])
                for track_id in ids:
                    r = client.delete(f"/tracks/{track_id}", headers=KEY)
                    assert r.status_code == 200, r.text
        stop.set()

    def reader(kind):
        seen = 0
        with server.client() as client:
            while not stop.is_set() or seen < 3:
                if kind == "search":
                    tracks = search(client)
                    scores = [t["score"] for t in tracks]
                    assert scores == sorted(scores, reverse=True)
                    got = {t["id"]: t["score"] for t in tracks}
                    assert stable_ids <= set(got)
                    for track_id, score in got.items():
                        if track_id in baseline:
                            assert score == pytest.approx(baseline[track_id], abs=1e-6)
                        else:
                            seen_unknown.add(track_id)
                else:
                    singers = identify(client)
                    assert singers[0]["name"] == singer_name(0)
                    mine = [s for s in singers if not s["name"].startswith("churn")]
                    assert same_singers(mine, baseline_singers)
                seen += 1
        return seen

    with ThreadPoolExecutor(5) as pool:
        writing = pool.submit(writer)
        readers = [
            pool.submit(reader, kind) for kind in ("search", "search", "identify", "identify")
        ]
        writing.result()
        counts = [r.result() for r in readers]
    assert all(c >= 3 for c in counts)
    assert len(created) == 12 and seen_unknown <= created

    with server.client() as client:
        assert {t["id"]: t["score"] for t in search(client)} == pytest.approx(baseline)
        assert same_singers(identify(client), baseline_singers)
        assert all(client.get(f"/tracks/{i}").status_code == 404 for i in created)
        assert client.get("/singers").json()["total"] == len(VOICES)
