"""The checkpoint check (service/checkpoint_check.py): while the catalogue holds a vector of
another checkpoint, queries and additions are refused and /readyz is 503; reads and DELETE
still work, and deleting the stale track makes the service consistent again."""

from __future__ import annotations

import numpy as np

from tests.service.conftest import KEY, post_audio, runtime_of


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
