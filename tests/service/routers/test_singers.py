"""`GET /singers` (service/routers/singers.py): the catalogue's singers, in pages."""

from __future__ import annotations

import pytest

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
