"""`GET /tracks/{id}/audio` on a real uvicorn: Range answers compared byte for byte with the
file, 416, 404 for a file that is gone, 403 for a recorded path outside the allowed folders
(SINGER_AUDIO_ROOTS here), 200 for a link inside them whatever its target (a library of
symlinks plays; service/audio_files.py), the upload store of POST /tracks, and `playable`."""

from __future__ import annotations

import os

import pytest

from catalog import Catalog, content_hash
from model.embedding import Embedder
from tests.support.live import API_KEY, LiveServer, add_clip, live_settings, make_clip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Audio files: inside the allowed root, outside it, and symlinks out of and within it."""
    base = tmp_path_factory.mktemp("audio")
    inside, outside = base / "music", base / "elsewhere"
    files = {
        "inside": make_clip(inside, 0, "mono", 1).path,
        "gone": make_clip(inside, 1, "mono", 1).path,
        "outside": make_clip(outside, 2, "mono", 1).path,
        "secret": make_clip(outside, 3, "mono", 1).path,
        "behind_dir": make_clip(outside, 2, "mono", 3).path,
        "target": make_clip(inside / "sub", 3, "mono", 2).path,
        "hidden": make_clip(outside, 1, "mono", 4).path,
    }
    files["link_out"] = inside / "link-out.wav"
    files["link_out"].symlink_to(files["secret"])
    files["link_in"] = inside / "link-in.wav"
    files["link_in"].symlink_to(files["target"])
    (inside / "dir-out").symlink_to(outside, target_is_directory=True)
    files["dir_out"] = inside / "dir-out" / files["behind_dir"].name
    # Recorded through `..`: the link's text starts in the root, its location does not.
    files["dotdot_out"] = inside / ".." / outside.name / files["hidden"].name
    return inside, files


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_checkpoint, files):
    root, paths = files
    settings = live_settings(tmp_path_factory, random_checkpoint, audio_roots=[root])
    embedder = Embedder.from_checkpoint(random_checkpoint, device="cpu")
    ids = {}
    # Tracks recorded with a path, as the batch indexer files them.
    with Catalog.open(settings.index_dir, dim=embedder.embed_dim) as catalog:
        for name, path in paths.items():
            if name in ("secret", "target", "behind_dir", "hidden"):  # reached through links
                continue
            data = path.read_bytes()
            emb = embedder.embed_file(data, "mono")
            track = catalog.add_track(
                emb.vector,
                singer=f"indexed-{name}",
                domain="mono",
                duration_s=emb.duration_s,
                n_segments=emb.n_segments,
                content_hash=content_hash(data),
                checkpoint_id=embedder.checkpoint_id,
                path=str(path),
            )
            ids[name] = track.id
    paths["gone"].unlink()
    with LiveServer(settings) as srv:
        srv.ids = ids
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def test_whole_file_and_ranges_match_the_file(client, server, files):
    data = files[1]["inside"].read_bytes()
    url = f"/tracks/{server.ids['inside']}/audio"
    r = client.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "audio/wav" and r.headers["accept-ranges"] == "bytes"
    for header, (start, stop) in {
        "bytes=0-99": (0, 100),
        "bytes=1000-": (1000, len(data)),
        "bytes=-500": (len(data) - 500, len(data)),
    }.items():
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start:stop]
        assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(data)}"


def test_range_outside_the_file_is_416(client, server, files):
    size = files[1]["inside"].stat().st_size
    r = client.get(f"/tracks/{server.ids['inside']}/audio", headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"


def test_missing_file_and_unknown_track_are_404(client, server):
    r = client.get(f"/tracks/{server.ids['gone']}/audio")
    assert r.status_code == 404 and r.json()["code"] == "audio_gone"
    r = client.get("/tracks/999999/audio")
    assert r.status_code == 404 and r.json()["code"] == "track_not_found"
    assert client.get(f"/tracks/{server.ids['gone']}").json()["playable"] is False


@pytest.mark.parametrize("name", ["outside", "dotdot_out"])
def test_paths_outside_the_roots_are_refused(client, server, name):
    r = client.get(f"/tracks/{server.ids[name]}/audio")
    assert r.status_code == 403 and r.json()["code"] == "audio_not_allowed"
    assert r.json()["reason"] == "outside_roots"
    assert str(server.ids[name]) in r.json()["detail"] and "/" not in r.json()["detail"]
    track = client.get(f"/tracks/{server.ids[name]}").json()
    assert (track["playable"], track["audio_unavailable"]) == (False, "outside_roots")


@pytest.mark.parametrize(("name", "target"), [("link_out", "secret"), ("dir_out", "behind_dir")])
def test_links_inside_the_roots_play_wherever_they_point(client, server, files, name, target):
    """The catalogue recorded the link in an indexed folder (an operator's choice), so its
    target plays, as a library of symlinks does; no request path is involved."""
    r = client.get(f"/tracks/{server.ids[name]}/audio")
    assert r.status_code == 200 and r.content == files[1][target].read_bytes()
    r = client.get(f"/tracks/{server.ids[name]}/audio", headers={"Range": "bytes=44-99"})
    assert r.status_code == 206 and r.content == files[1][target].read_bytes()[44:100]
    assert client.get(f"/tracks/{server.ids[name]}").json()["playable"] is True


def test_symlink_within_the_roots_is_served(client, server, files):
    r = client.get(f"/tracks/{server.ids['link_in']}/audio")
    assert r.status_code == 200 and r.content == files[1]["target"].read_bytes()
    assert client.get(f"/tracks/{server.ids['link_in']}").json()["playable"] is True


def test_uploaded_tracks_are_stored_and_served_until_deleted(client, server, tmp_path):
    clip = make_clip(tmp_path, 2, "mixed", 7)
    track = add_clip(client, clip)
    assert track["path"] is None and track["playable"] is True
    stored = server.app.state.runtime.settings.upload_store / f"{track['content_hash']}.wav"
    assert stored.read_bytes() == clip.path.read_bytes()
    r = client.get(f"/tracks/{track['id']}/audio", headers={"Range": "bytes=44-"})
    assert r.status_code == 206 and r.content == clip.path.read_bytes()[44:]
    # The same content filed in the other domain shares the stored file.
    with open(clip.path, "rb") as fh:
        other = client.post(
            "/tracks",
            files={"file": (clip.path.name, fh, "audio/wav")},
            data={"singer": clip.singer, "domain": "mono"},
            headers={"X-API-Key": API_KEY},
        ).json()
    headers = {"X-API-Key": API_KEY}
    assert client.delete(f"/tracks/{track['id']}", headers=headers).status_code == 200
    assert stored.is_file()
    assert client.get(f"/tracks/{other['id']}/audio").status_code == 200
    assert client.delete(f"/tracks/{other['id']}", headers=headers).status_code == 200
    assert not stored.exists()
    assert client.get(f"/tracks/{other['id']}/audio").status_code == 404


def test_no_request_path_reaches_the_filesystem(client, server):
    for url in (
        "/tracks/..%2F..%2Fetc%2Fpasswd/audio",
        "/tracks/1%2F..%2F/audio",
        "/static/../app.py",
    ):
        r = client.get(url)
        assert r.status_code in (404, 422), url
        assert b"import" not in r.content and b"root:" not in r.content


def test_upload_store_can_be_switched_off(tmp_path_factory, random_checkpoint, tmp_path):
    settings = live_settings(tmp_path_factory, random_checkpoint, store_uploads=False)
    with LiveServer(settings) as srv, srv.client() as c:
        track = add_clip(c, make_clip(tmp_path, 0, "mono", 3))
        assert track["playable"] is False
        assert c.get(f"/tracks/{track['id']}/audio").status_code == 404
        assert not settings.upload_store.exists() or not os.listdir(settings.upload_store)
