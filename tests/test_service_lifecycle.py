"""Start-up and readiness: load failures, `python -m service`, and a catalogue built by
another checkpoint (queries refused with 409 and /readyz 503 until it is consistent)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from model.checkpoint import checkpoint_id, make_random_checkpoint
from service.settings import Settings
from tests.support import REPO
from tests.support.live import (
    API_KEY,
    LiveServer,
    add_clip,
    free_port,
    make_clip,
    upload,
    wait_ready,
)

pytestmark = pytest.mark.e2e

KEY = {"X-API-Key": API_KEY}


def settings(index_dir, checkpoint, **kw) -> Settings:
    return Settings(index_dir=index_dir, checkpoint=checkpoint, device="cpu", api_key=API_KEY, **kw)


def test_failed_load_keeps_the_service_up_but_not_ready(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with LiveServer(settings(tmp_path / "index", broken)) as srv, srv.client() as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "load_failed"
        assert "CheckpointError" in ready.json()["detail"]
        clip = make_clip(tmp_path, 0, "mono", 0)
        r = upload(client, "/identify", clip.path)
        assert r.status_code == 503 and r.json()["code"] == "load_failed"
        assert client.get("/singers").status_code == 503
        assert "singer_ready 0.0" in client.get("/metrics").text


def test_python_m_service_exits_when_the_model_cannot_load(tmp_path):
    env = {
        **os.environ,
        "SINGER_CHECKPOINT": str(tmp_path / "missing.pt"),
        "SINGER_INDEX_DIR": str(tmp_path / "index"),
        "SINGER_PORT": str(free_port()),
        "SINGER_DEVICE": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "checkpoint not found" in done.stderr


def test_python_m_service_help_lists_the_settings():
    done = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for name in Settings.model_fields:
        assert f"SINGER_{name.upper()}" in done.stdout


def test_catalogue_of_another_checkpoint_is_refused_until_consistent(tmp_path, random_checkpoint):
    index = tmp_path / "index"
    clips = [make_clip(tmp_path, v, "mono", 0) for v in range(2)]
    with LiveServer(settings(index, random_checkpoint)) as srv, srv.client() as client:
        old = [add_clip(client, c) for c in clips]

    other = make_random_checkpoint(tmp_path / "other.pt", seed=1)
    with LiveServer(settings(index, other)) as srv, srv.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "checkpoint_mismatch"
        assert checkpoint_id(random_checkpoint) in ready.json()["detail"]
        for endpoint in ("/identify", "/search"):
            r = upload(client, endpoint, clips[0].path)
            assert r.status_code == 409, r.text
            body = r.json()
            assert body["code"] == "checkpoint_mismatch"
            assert body["catalog_checkpoints"] == [checkpoint_id(random_checkpoint)]
            assert body["model_checkpoint"] == checkpoint_id(other)
        r = upload(client, "/tracks", clips[0].path, headers=KEY, singer="x", domain="mono")
        assert r.status_code == 409
        # Reads still work, and deleting the stale tracks makes the catalogue consistent.
        assert client.get("/singers").json()["total"] == 2
        for track in old:
            assert client.delete(f"/tracks/{track['id']}", headers=KEY).status_code == 200
        assert client.get("/readyz").status_code == 200
        assert upload(client, "/identify", clips[0].path).status_code == 200
        assert add_clip(client, clips[0])["checkpoint_id"] == checkpoint_id(other)


def test_readyz_is_503_until_loaded(tmp_path, random_checkpoint):
    """Loading is held up by another connection's lock on the catalogue file: meanwhile the
    server is up, /readyz and the endpoints answer 503; once released it becomes ready."""
    index = tmp_path / "index"
    index.mkdir()
    blocker = sqlite3.connect(index / "catalog.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    srv = LiveServer(settings(index, random_checkpoint)).start(wait_loaded=False)
    try:
        with srv.client() as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
            r = upload(client, "/identify", make_clip(tmp_path, 0, "mono", 0).path)
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            blocker.execute("ROLLBACK")
            blocker.close()
            wait_ready(srv.url, 60)
            assert client.get("/readyz").status_code == 200
    finally:
        srv.stop()
