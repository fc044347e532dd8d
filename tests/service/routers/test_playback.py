"""`GET /tracks/{id}/audio` (service/routers/playback.py): the file of a track, by id only,
with Range requests; 403 outside the allowed folders, 404 when the file is gone."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service.conftest import KEY, runtime_of
from tests.support.live import make_clip


@pytest.fixture
def indexed(client, library, tmp_path):
    """Add a track whose recorded path is a file, as the indexer records one: yields
    (add(path) -> track id); the tracks are removed afterwards."""
    runtime = runtime_of(client)
    ids: list[int] = []

    def add(path) -> int:
        vector = np.ones(runtime.embedder.embed_dim, np.float32)
        track = runtime.catalog.add_track(
            vector / np.linalg.norm(vector),
            singer="indexed",
            domain="mono",
            duration_s=7.0,
            n_segments=2,
            content_hash=f"indexed-{len(ids)}-{path.name}",
            checkpoint_id=runtime.embedder.checkpoint_id,
            path=str(path),
        )
        ids.append(track.id)
        return track.id

    yield add
    for track_id in ids:
        client.delete(f"/tracks/{track_id}", headers=KEY)


def test_an_uploaded_track_plays_whole_and_in_ranges(client, catalog):
    clip, track = next(iter(catalog.items()))
    data = clip.path.read_bytes()
    r = client.get(f"/tracks/{track['id']}/audio")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "audio/wav"
    part = client.get(f"/tracks/{track['id']}/audio", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    beyond = client.get(f"/tracks/{track['id']}/audio", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416


def test_an_indexed_file_plays_while_it_is_in_an_allowed_folder(client, library, indexed):
    clip = make_clip(library, 1, "mono", seed=30)
    track_id = indexed(clip.path)
    assert client.get(f"/tracks/{track_id}").json()["playable"] is True
    assert client.get(f"/tracks/{track_id}/audio").content == clip.path.read_bytes()
    clip.path.unlink()
    assert client.get(f"/tracks/{track_id}").json()["playable"] is False
    r = client.get(f"/tracks/{track_id}/audio")
    assert r.status_code == 404 and r.json()["code"] == "audio_gone", r.text


def test_a_file_outside_the_allowed_folders_is_a_403(client, indexed, tmp_path):
    clip = make_clip(tmp_path, 1, "mono", seed=31)
    track_id = indexed(clip.path)
    assert client.get(f"/tracks/{track_id}").json()["playable"] is False
    r = client.get(f"/tracks/{track_id}/audio")
    assert r.status_code == 403 and r.json()["code"] == "audio_not_allowed", r.text
    assert str(tmp_path) not in r.text  # the answer names no server path


def test_a_symlink_out_of_an_allowed_folder_still_plays(client, library, indexed, tmp_path):
    """A library of links (issue 35): the link lies in the folder, its target elsewhere."""
    clip = make_clip(tmp_path, 2, "mono", seed=32)
    link = library / "linked.wav"
    link.symlink_to(clip.path)
    try:
        track_id = indexed(link)
        r = client.get(f"/tracks/{track_id}/audio")
        assert r.status_code == 200 and r.content == clip.path.read_bytes()
    finally:
        link.unlink()


def test_an_unknown_track_is_a_404(client):
    r = client.get("/tracks/987654321/audio")
    assert r.status_code == 404 and r.json()["code"] == "track_not_found"
