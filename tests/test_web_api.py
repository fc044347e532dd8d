"""What the web page relies on, without a browser: `Catalog.list_tracks` and `GET /tracks`
(keyset pagination), the page and its static files, /docs and /redoc without a CDN, and
decoding of the webm/Opus that browsers record."""

from __future__ import annotations

import re

import numpy as np
import pytest

from catalog import Catalog
from model.audio import SAMPLE_RATE, load_audio
from tests.support.encoded import encode
from tests.support.live import LiveServer, add_clip, live_settings, make_clip, render
from tests.test_catalog import fill


@pytest.fixture
def catalog(tmp_path):
    with Catalog.open(tmp_path / "index", dim=32) as c:
        fill(c, np.random.default_rng(0), n=30, singers=4)
        yield c


@pytest.mark.parametrize(
    ("singer", "domain"), [(None, None), ("singer 1", None), (None, "mixed"), ("singer 2", "mono")]
)
@pytest.mark.parametrize("limit", [1, 4, 50])
def test_list_tracks_pages_through_the_filtered_tracks(catalog, singer, domain, limit):
    expected = catalog.track_ids(singer=singer, domain=domain)
    seen, after = [], 0
    while page := catalog.list_tracks(singer=singer, domain=domain, after_id=after, limit=limit):
        assert len(page) <= limit
        assert all(
            t.singer == (singer or t.singer) and t.domain == (domain or t.domain) for t in page
        )
        seen += [t.id for t in page]
        after = page[-1].id
    assert seen == expected and expected
    assert catalog.list_tracks(singer="nobody") == []
    assert [t.id for t in catalog.list_tracks(after_id=expected[-1])] == [
        i for i in catalog.track_ids() if i > expected[-1]
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.mark.e2e
def test_get_tracks_walks_the_catalogue_with_the_cursor(client, tmp_path):
    added = [add_clip(client, make_clip(tmp_path, v % 3, "mono", v, seconds=3.5)) for v in range(7)]
    singer = added[1]["singer"]
    for params, expected in (
        ({}, [t["id"] for t in added]),
        ({"singer": singer}, [t["id"] for t in added if t["singer"] == singer]),
        ({"domain": "mixed"}, []),
    ):
        seen, after = [], 0
        while True:
            r = client.get("/tracks", params={**params, "after": after, "limit": 2})
            assert r.status_code == 200
            body = r.json()
            seen += [t["id"] for t in body["tracks"]]
            assert all(t["playable"] for t in body["tracks"])
            if body["next_after"] is None:
                break
            after = body["next_after"]
        assert seen == expected
    assert client.get("/tracks", params={"limit": 0}).status_code == 422
    assert client.get("/tracks", params={"domain": "jazz"}).status_code == 422


@pytest.mark.e2e
def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        assert client.get(asset).status_code == 200, asset
    assert "http://" not in r.text and "https://" not in r.text
    assert client.get("/static/../app.py").status_code == 404


@pytest.mark.e2e
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_nothing_from_the_internet(client, page):
    r = client.get(page)
    assert r.status_code == 200
    refs = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', r.text)
    assert refs and not [u for u in refs if u.startswith(("http:", "https:", "//"))]
    for ref in refs:
        assert client.get(ref).status_code == 200, ref
    assert "cdn" not in r.text.lower() and "fonts.googleapis" not in r.text


@pytest.mark.parametrize(("container", "live"), [("webm", True), ("opus", False)])
def test_opus_as_browsers_record_it_decodes(container, live):
    """A synthetic take encoded as browsers record (Opus at 48 kHz in WebM, streamed with no
    duration: Chromium; in Ogg: Firefox; encoded with PyAV, no ffmpeg) decodes to the take."""
    y = render(1, "mono", seed=3, seconds=4.0)
    webm = encode(y, SAMPLE_RATE, container, live=live)
    decoded = load_audio(webm)
    assert abs(len(decoded) - len(y)) < 0.05 * SAMPLE_RATE
    n = min(len(y), len(decoded))
    corr = np.corrcoef(y[:n], decoded[:n])[0, 1]
    assert corr > 0.9


@pytest.mark.e2e
def test_a_track_says_why_it_cannot_play(server, client, tmp_path):
    """`audio_unavailable` in track answers, and the audio endpoint's `reason`, as the page
    shows them: not_stored, outside_roots, gone (service/audio_files.py)."""
    upload = add_clip(client, make_clip(tmp_path, 1, "mono", 40, seconds=3.5))
    assert upload["playable"] and upload["audio_unavailable"] is None
    for kept in (server.app.state.runtime.settings.upload_store).glob(
        f"{upload['content_hash']}.*"
    ):
        kept.unlink()
    track = client.get(f"/tracks/{upload['id']}").json()
    assert (track["playable"], track["audio_unavailable"]) == (False, "not_stored")
    r = client.get(f"/tracks/{upload['id']}/audio")
    assert r.status_code == 404 and r.json()["reason"] == "not_stored"

    runtime = server.app.state.runtime
    music = tmp_path / "music"
    clip = make_clip(music / "Ann", 2, "mono", 41, seconds=3.5)
    vector = np.ones(runtime.catalog.dim, np.float32)
    indexed = runtime.catalog.add_track(
        vector, singer="Ann", domain="mono", duration_s=3.5, n_segments=1,
        content_hash="f" * 64, checkpoint_id=runtime.embedder.checkpoint_id, path=str(clip.path),
    )  # fmt: skip
    body = client.get(f"/tracks/{indexed.id}").json()
    assert body["audio_unavailable"] == "outside_roots"
    assert client.get(f"/tracks/{indexed.id}/audio").json()["reason"] == "outside_roots"
    runtime.catalog.add_roots([str(music)])  # what indexing the folder records
    runtime.audio.follow(runtime.catalog.roots)
    assert client.get(f"/tracks/{indexed.id}").json()["playable"] is True
    assert client.get(f"/tracks/{indexed.id}/audio").content == clip.path.read_bytes()
    clip.path.unlink()
    assert client.get(f"/tracks/{indexed.id}").json()["audio_unavailable"] == "gone"
    runtime.catalog.remove_tracks([indexed.id])
