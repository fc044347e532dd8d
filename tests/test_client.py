"""singer_client against a live service (real uvicorn, real HTTP, real catalogue): every
endpoint through `Client` and `AsyncClient`, typed answers checked against the raw JSON of
the same request, paging against one whole page, and each error family.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from singer_client import (
    AsyncClient,
    AudioRejectedError,
    AuthenticationError,
    Client,
    Identification,
    InvalidParametersError,
    NotFoundError,
    SearchPage,
    UnsupportedFormatError,
)
from tests.support.live import API_KEY, LiveServer, live_settings, make_clip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv:
        yield srv


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two mono takes of each of three singers."""
    folder = tmp_path_factory.mktemp("clips")
    return [make_clip(folder, v, "mono", seed) for v in range(3) for seed in (0, 1)]


@pytest.fixture(scope="module")
def added(server, clips):
    with Client(server.url, api_key=API_KEY) as api:
        return [api.add_track(c.path, singer=c.singer, domain=c.domain) for c in clips]


def raw_post(server, endpoint: str, path, **form) -> dict:
    with httpx.Client(base_url=server.url, timeout=120) as raw:
        files = {"file": (path.name, path.read_bytes())}
        r = raw.post(endpoint, files=files, data={k: str(v) for k, v in form.items()})
        assert r.status_code == 200, r.text
        return r.json()


def test_health_ready_and_writes(server, clips, added):
    with Client(server.url, api_key=API_KEY) as api:
        assert api.health() is True
        ready = api.ready()
        assert ready.status == "ready" and ready.checkpoint_id == added[0].checkpoint_id
        assert all(a.created and a.quality is not None for a in added)
        assert [a.singer for a in added] == [c.singer for c in clips]
        # The same content again, as bytes: the existing track, not a new one.
        again = api.add_track(
            clips[0].path.read_bytes(), singer=clips[0].singer, domain="mono", filename="x.wav"
        )
        assert not again.created and again.id == added[0].id and again.quality is None


def test_identify_is_the_raw_answer_typed(server, clips, added):
    with Client(server.url) as api:
        answer = api.identify(clips[2].path, top_k=3, timeline=True)
    raw = raw_post(server, "/identify", clips[2].path, top_k=3, timeline="true")
    assert answer == Identification.model_validate(raw)
    assert [(s.name, s.score) for s in answer.singers] == [
        (s["name"], s["score"]) for s in raw["singers"]
    ]
    assert answer.timeline is not None and answer.segments
    # the open-set fields are typed, not extras
    assert answer.singing_s == raw["singing_s"] > 0 and not answer.model_extra
    assert (answer.verdict, answer.firm_answer_s) == (raw["verdict"], raw["firm_answer_s"])


def test_search_pages_equal_one_whole_page(server, clips, added):
    with Client(server.url) as api:
        pages = list(api.search_pages(clips[3].path, top_k=2, target="mono"))
        whole = api.search(clips[3].path, top_k=len(clips), target="mono")
    assert [len(p.tracks) for p in pages] == [2, 2, 2]
    assert pages[-1].next_cursor is None and all(p.next_cursor for p in pages[:-1])
    assert [t.id for p in pages for t in p.tracks] == [t.id for t in whole.tracks]
    raw = raw_post(server, "/search", clips[3].path, top_k=len(clips), target="mono")
    assert whole == SearchPage.model_validate(raw)


def test_tracks_audio_singers_and_delete(server, clips, added, tmp_path):
    with Client(server.url, api_key=API_KEY) as api:
        listed = list(api.iter_tracks(page_size=4))  # two pages
        assert [t.id for t in listed] == sorted(a.id for a in added)
        one = api.track(added[1].id)
        assert one.model_dump(exclude={"playable"}) == added[1].model_dump(
            exclude={"quality", "created", "playable"}
        )
        assert [t.singer for t in api.tracks(singer="singer-1").tracks] == ["singer-1"] * 2
        assert api.track_audio(added[1].id) == clips[1].path.read_bytes()  # the stored upload
        singers = list(api.iter_singers(page_size=2))
        assert sorted(s.name for s in singers) == ["singer-0", "singer-1", "singer-2"]
        by_name = api.singer("singer-2")
        assert by_name == api.singer(by_name.id) and by_name.n_tracks["mono"] == 2
        detail = api.singer_detail(by_name.id)
        raw = httpx.get(f"{server.url}/singers/{by_name.id}", timeout=30).json()
        assert detail.model_dump() == raw and not detail.model_extra
        assert (detail.name, [m.domain for m in detail.models]) == ("singer-2", ["mono"])
        assert detail.models[0].n_tracks == 2 and len(detail.models[0].tracks) == 2
        with pytest.raises(NotFoundError):
            api.singer_detail(10**6)
        with pytest.raises(NotFoundError) as missing_singer:
            api.singer("nobody")
        assert missing_singer.value.code == "singer_not_found"
        gone = api.delete_track(added[-1].id)
        assert gone.id == added[-1].id
        with pytest.raises(NotFoundError) as missing:
            api.track(gone.id)
        assert (missing.value.status, missing.value.code) == (404, "track_not_found")
        assert api.singer("singer-2").n_tracks["mono"] == 1


def test_error_families(server, clips, tmp_path):
    short = make_clip(tmp_path, 0, "mono", 5, seconds=1.0).path
    with Client(server.url) as api:
        with pytest.raises(UnsupportedFormatError) as unsupported:
            api.identify(b"certainly not audio" * 50)
        assert unsupported.value.status == 415 and unsupported.value.code == "unsupported_format"
        assert "m4a" in unsupported.value.body["supported_formats"]
        with pytest.raises(AudioRejectedError) as too_short:
            api.identify(short)
        assert too_short.value.code == "audio_too_short"
        with pytest.raises(InvalidParametersError) as bad:
            api.identify(clips[0].path, top_k=0)
        assert bad.value.code == "invalid_parameters"
        assert any("top_k" in e.loc for e in bad.value.errors)
        with pytest.raises(AuthenticationError) as no_key:
            api.add_track(clips[0].path, singer="x", domain="mono")
        assert (no_key.value.status, no_key.value.code) == (401, "unauthorized")


def test_async_client_answers_as_the_sync_one(server, clips, added):
    with Client(server.url) as api:
        expected = [api.identify(c.path) for c in clips[:3]]
        expected_tracks = list(api.iter_tracks())
        expected_pages = list(api.search_pages(clips[0].path, top_k=4, target="mono"))

    async def run():
        async with AsyncClient(server.url) as api:
            answers = await asyncio.gather(*(api.identify(c.path) for c in clips[:3]))
            tracks = [t async for t in api.iter_tracks(page_size=2)]
            pages = [p async for p in api.search_pages(clips[0].path, top_k=4, target="mono")]
            singer = await api.singer("singer-0")
            detail = await api.singer_detail(singer.id)
            assert detail.name == "singer-0" and detail.models[0].n_tracks == 2
            ready = await api.ready()
            with pytest.raises(NotFoundError):
                await api.track(10**9)
            return answers, tracks, pages, singer, ready

    answers, tracks, pages, singer, ready = asyncio.run(run())
    assert answers == expected and tracks == expected_tracks and pages == expected_pages
    assert singer.name == "singer-0" and ready.status == "ready"
