"""`GET /singers` and `GET /singers/{id}` (service/routers/singers.py): the catalogue's
singers, in pages, and one singer's models."""

from __future__ import annotations

import pytest

from tests.service.conftest import runtime_of
from tests.support.live import singer_name
from tests.support.synth import VOICES


def test_singers_come_in_pages(client, catalog):
    first = client.get("/singers", params={"limit": 3}).json()
    rest = client.get("/singers", params={"offset": 3, "limit": 3}).json()
    assert first["total"] == rest["total"] == len(VOICES)
    assert (first["offset"], first["limit"], rest["offset"]) == (0, 3, 3)
    assert len(first["singers"]) == 3 and len(rest["singers"]) == len(VOICES) - 3
    names = [s["name"] for s in first["singers"] + rest["singers"]]
    assert names == sorted(names) == [singer_name(v) for v in range(len(VOICES))]
    assert all(s["n_tracks"] == {"mono": 2, "mixed": 2} for s in first["singers"])


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 2**31}, {"offset": [0, 1]}],
)
def test_a_bad_page_is_a_422(client, params):
    r = client.get("/singers", params=params)
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters", r.text


def test_a_singer_s_models_and_how_well_each_track_fits(client, catalog):
    """Per domain, the model's tracks and each track's fit: the cosine of its vector to the
    model made of the singer's other tracks there (two tracks: each fits the other)."""
    runtime = runtime_of(client)
    singers = client.get("/singers").json()["singers"]
    singer = next(s for s in singers if s["name"] == singer_name(2))
    r = client.get(f"/singers/{singer['id']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["name"], body["n_tracks"]) == (
        singer["id"],
        singer_name(2),
        singer["n_tracks"],
    )
    assert {m["domain"] for m in body["models"]} == {"mono", "mixed"}
    for model in body["models"]:
        ids = {t["id"] for t in model["tracks"]}
        mine = {
            t["id"]
            for clip, t in catalog.items()
            if clip.singer == singer_name(2) and clip.domain == model["domain"]
        }
        assert ids == mine and model["n_tracks"] == 2
        a, b = (runtime.catalog.get_vector(i) for i in sorted(ids))
        for track in model["tracks"]:
            assert track["fit"] == pytest.approx(float(a @ b), abs=1e-4)
            # two tracks fit each other equally: neither fits worse than its sibling
            assert track["relative_fit"] == pytest.approx(0.0, abs=1e-4)


def test_an_unknown_singer_is_a_404(client, catalog):
    r = client.get("/singers/2147483647")
    assert r.status_code == 404 and r.json()["code"] == "singer_not_found", r.text
    r = client.get("/singers/0")
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameters"
