"""The checkpoint check (service/checkpoint_check.py): while the catalogue holds a vector of
another checkpoint, queries and additions are refused and /readyz is 503; reads and DELETE
still work, and deleting the stale track makes the service consistent again."""

from __future__ import annotations

import numpy as np

from model.checkpoint import checkpoint_id, make_random_checkpoint
from tests.service.conftest import KEY, add, app_settings, post_audio, runtime_of, serving
from tests.support.live import make_clip


def test_a_stale_track_blocks_queries_until_it_is_removed(client, catalog, queries):
    runtime = runtime_of(client)
    vector = np.ones(runtime.embedder.embed_dim, np.float32)
    stale = runtime.catalog.add_track(
        vector / np.linalg.norm(vector),
        singer="stale",
        domain="mono",
        duration_s=3.0,
        n_segments=1,
        content_hash="stale-content",
        checkpoint_id="0123456789abcdef",
    )
    try:
        ready = client.get("/readyz")  # re-reads the catalogue's checkpoints at once
        assert ready.status_code == 503 and ready.json()["code"] == "checkpoint_mismatch"
        query = queries[0, "mono"].path
        answers = [
            post_audio(client, "/identify", query),
            post_audio(client, "/search", query),
            post_audio(client, "/tracks", query, KEY, singer="x", domain="mono"),
        ]
        for r in answers:
            assert r.status_code == 409 and r.json()["code"] == "checkpoint_mismatch", r.text
            assert r.json()["catalog_checkpoints"] == ["0123456789abcdef"]
            assert r.json()["model_checkpoint"] == runtime.embedder.checkpoint_id
        assert client.get(f"/tracks/{stale.id}").status_code == 200
    finally:
        assert client.delete(f"/tracks/{stale.id}", headers=KEY).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert post_audio(client, "/identify", queries[0, "mono"].path).status_code == 200


def test_a_catalogue_built_by_another_checkpoint_is_refused_until_consistent(
    tmp_path_factory, tmp_path, random_checkpoint
):
    """A service restarted with another model over the same catalogue."""
    settings = app_settings(tmp_path_factory, random_checkpoint)
    clips = [make_clip(tmp_path, v, "mono", 0) for v in range(2)]
    with serving(settings) as client:
        old = [add(client, c) for c in clips]
    other = make_random_checkpoint(tmp_path / "other.pt", seed=1)
    with serving(settings.model_copy(update={"checkpoint": other})) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "checkpoint_mismatch"
        assert checkpoint_id(random_checkpoint) in ready.json()["detail"]
        for endpoint in ("/identify", "/search"):
            r = post_audio(client, endpoint, clips[0].path)
            assert r.status_code == 409 and r.json()["code"] == "checkpoint_mismatch", r.text
            assert r.json()["catalog_checkpoints"] == [checkpoint_id(random_checkpoint)]
            assert r.json()["model_checkpoint"] == checkpoint_id(other)
        # Reads still work, and deleting the stale tracks makes the catalogue consistent.
        assert client.get("/singers").json()["total"] == 2
        for track in old:
            assert client.delete(f"/tracks/{track['id']}", headers=KEY).status_code == 200
        assert client.get("/readyz").status_code == 200
        assert post_audio(client, "/identify", clips[0].path).status_code == 200
        assert add(client, clips[0])["checkpoint_id"] == checkpoint_id(other)
