"""`GET /healthz`, `GET /readyz`, `GET /metrics` (service/routers/health.py), in each state
of the runtime: loading, failed, ready."""

from __future__ import annotations

import sqlite3
import time

from model.checkpoint import checkpoint_id
from service.app import create_app
from tests.service.conftest import TestClient, app_settings, post_audio, serving
from tests.support.synth import VOICES


def test_ready(client, catalog, random_checkpoint):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["device"] == "cpu"
    assert body["checkpoint_id"] == checkpoint_id(random_checkpoint)
    assert body["catalog"]["n_singers"] == len(VOICES)
    assert body["catalog"]["n_tracks"] == {"mono": 2 * len(VOICES), "mixed": 2 * len(VOICES)}
    assert "directory" not in body["catalog"]  # where the data lives is the host's business
    assert body["calibrated"] is False and "no calibration" in body["calibration"]


def test_metrics_count_what_was_asked(client, catalog, queries):
    text = client.get("/metrics").text  # before: counts only go up from here
    post_audio(client, "/identify", queries[0, "mono"].path)
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = r.text
    assert 'singer_http_requests_total{method="POST",route="/identify",status="200"}' in after
    assert (
        'singer_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/identify"}'
        in after
    )
    assert f'singer_catalog_tracks{{domain="mono"}} {2.0 * len(VOICES)}' in after
    assert f"singer_catalog_singers {float(len(VOICES))}" in after
    assert 'singer_embedding_seconds_count{domain="mono"}' in after
    assert "singer_ready 1.0" in after and "singer_inference_running 0.0" in after
    assert "process_resident_memory_bytes" in after
    assert text != after


def test_loading(tmp_path_factory, random_checkpoint, queries):
    """Before the lifespan has loaded anything (not run here): 503 `not_ready`, with
    Retry-After on the routes that need the model; health and metrics answer."""
    client = TestClient(create_app(app_settings(tmp_path_factory, random_checkpoint)))
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["code"] == "not_ready"
    assert r.json()["state"] == "loading"
    for r in (post_audio(client, "/identify", queries[0, "mono"].path), client.get("/tracks")):
        assert r.status_code == 503 and r.json()["code"] == "not_ready"
        assert r.headers["Retry-After"] == "5"
    assert "singer_ready 0.0" in client.get("/metrics").text


def test_the_service_answers_while_loading_is_held_up(tmp_path_factory, random_checkpoint, queries):
    """Loading held up by another connection's lock on the catalogue file: meanwhile the app
    is up, /readyz and the endpoints answer 503; once released, it becomes ready."""
    settings = app_settings(tmp_path_factory, random_checkpoint)
    settings.index_dir.mkdir(parents=True)
    blocker = sqlite3.connect(settings.index_dir / "catalog.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with serving(settings, wait_loaded=False) as client:
        try:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
            r = post_audio(client, "/identify", queries[0, "mono"].path)
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)


def test_a_failed_load_keeps_the_service_up_but_not_ready(tmp_path_factory, tmp_path, queries):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with serving(app_settings(tmp_path_factory, broken)) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["code"] == "load_failed"
        assert r.json()["state"] == "failed"
        assert r.json()["detail"] == "CheckpointError (details in the server log)"
        assert str(tmp_path) not in r.text
        r = post_audio(client, "/identify", queries[0, "mono"].path)
        assert r.status_code == 503 and r.json()["code"] == "load_failed"
        assert client.get("/singers").status_code == 503
        assert "singer_ready 0.0" in client.get("/metrics").text


def test_a_failed_load_says_why_when_paths_may_be_shown(tmp_path_factory, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with serving(app_settings(tmp_path_factory, broken, expose_paths=True)) as client:
        detail = client.get("/readyz").json()["detail"]
        assert detail.startswith("CheckpointError: ") and len(detail) > len("CheckpointError: ")
