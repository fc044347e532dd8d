"""Identify and search (service/queries.py) on a catalogue that holds one domain, then
none: the other domain is used and the answer says so; an empty catalogue is no error."""

from __future__ import annotations

import pytest

from service.queries import domain_with_tracks
from tests.service.conftest import add, app_settings, post_audio, runtime_of, serving
from tests.support.live import make_clip, singer_name


@pytest.fixture(scope="module")
def mono_only(tmp_path_factory, random_checkpoint):
    """An app whose catalogue is empty, then holds only mono tracks (`fill()`)."""
    with serving(app_settings(tmp_path_factory, random_checkpoint)) as client:
        d = tmp_path_factory.mktemp("mono-only")

        def fill() -> None:
            for voice in (0, 1):
                for seed in (0, 1):
                    add(client, make_clip(d, voice, "mono", seed))

        client.fill = fill  # type: ignore[attr-defined]
        yield client


def test_an_empty_catalogue_answers_with_nothing(mono_only, queries):
    ident = post_audio(mono_only, "/identify", queries[0, "mono"].path)
    assert ident.status_code == 200, ident.text
    body = ident.json()
    assert body["singers"] == [] and body["models_domain"] is None and body["verdict"] is None
    assert body["segments"] and all(s["singer"] is None for s in body["segments"])
    found = post_audio(mono_only, "/search", queries[0, "mono"].path).json()
    assert found["tracks"] == [] and found["note"] == "the catalogue is empty"
    assert found["searched"] == "mixed"
    catalog = runtime_of(mono_only).catalog
    assert domain_with_tracks(catalog, "mono") is None
    assert domain_with_tracks(catalog, "mixed") is None


def test_the_other_domain_stands_in_for_an_empty_one(mono_only, queries):
    mono_only.fill()
    catalog = runtime_of(mono_only).catalog
    assert domain_with_tracks(catalog, "mixed") == domain_with_tracks(catalog, "mono") == "mono"
    query = queries[1, "mixed"].path
    auto = post_audio(mono_only, "/identify", query, domain="mixed").json()
    assert auto["domain"] == "mixed" and auto["models_domain"] == "mono"
    assert auto["singers"][0]["name"] == singer_name(1)
    asked = post_audio(mono_only, "/identify", query, domain="mixed", models="mixed").json()
    assert asked["singers"] == [] and asked["models_domain"] is None
    found = post_audio(mono_only, "/search", query, domain="mixed").json()  # target: mixed
    assert found["searched"] == "mono"
    assert found["note"] == "the catalogue holds no mixed track; searched the mono tracks"
    assert len(found["tracks"]) == 4 and {t["domain"] for t in found["tracks"]} == {"mono"}
    scores = [t["score"] for t in found["tracks"]]
    assert scores == sorted(scores, reverse=True)
    anything = post_audio(mono_only, "/search", query, target="any").json()
    assert anything["searched"] == "any" and anything["note"] is None
    assert len(anything["tracks"]) == 4
