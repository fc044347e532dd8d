"""Two real `python -m service` processes on one catalogue answer /identify the same, right
after a write through either of them.

Backends: a shared SQLite directory and a real PostgreSQL + pgvector server (the
`postgres_server` fixture), always; a Qdrant server collection when SINGER_TEST_QDRANT_URL
names one (e.g. qdrant://127.0.0.1:6333); no Qdrant server can be installed on the build
machines (not in Debian or PyPI), so that case skips there. Qdrant's local mode cannot stand
in: it locks its folder to one process.
"""

from __future__ import annotations

import os
import sys
import uuid

import httpx
import pytest

from tests.support.live import API_KEY, ServiceProcess, add_clip, free_port, make_clip, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QDRANT_URL = os.environ.get("SINGER_TEST_QDRANT_URL")


def catalogue_env(backend: str, tmp_path, request) -> dict[str, str]:
    if backend == "sqlite":
        return {"SINGER_INDEX_DIR": str(tmp_path / "index")}
    if backend == "postgres":
        return {"SINGER_CATALOG": request.getfixturevalue("postgres_dsn")}
    if not QDRANT_URL:
        pytest.skip("no Qdrant server: set SINGER_TEST_QDRANT_URL=qdrant://HOST:6333")
    return {"SINGER_CATALOG": f"{QDRANT_URL.rstrip('/')}/replicas_{uuid.uuid4().hex[:8]}"}


def identify(url: str, path) -> dict:
    with httpx.Client(base_url=url, timeout=120) as client:
        r = upload(client, "/identify", path, domain="mono", top_k=5)
    assert r.status_code == 200, r.text
    return r.json()


def ranking(answer: dict) -> list[tuple[str, float]]:
    return [(h["name"], round(h["score"], 5)) for h in answer["singers"]]


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "qdrant"])
def test_two_replicas_agree_after_writes_through_either(
    backend, tmp_path, random_checkpoint, request
):
    env = {
        **os.environ,
        **catalogue_env(backend, tmp_path, request),
        "SINGER_CHECKPOINT": str(random_checkpoint),
        "SINGER_DEVICE": "cpu",
        "SINGER_API_KEY": API_KEY,
        "SINGER_INFERENCE_WORKERS": "1",
        "OMP_NUM_THREADS": "1",
    }
    clips = [make_clip(tmp_path, v, "mono", seed) for seed in (0, 1) for v in range(3)]
    query = make_clip(tmp_path / "query", 1, "mono", 7)
    replicas = []
    try:
        for name in ("a", "b"):
            port = free_port()
            cwd = tmp_path / name
            cwd.mkdir()
            proc = ServiceProcess(
                [sys.executable, "-m", "service"], {**env, "SINGER_PORT": str(port)}, port, cwd
            )
            replicas.append(proc.start(timeout=180))
        a, b = (r.url for r in replicas)
        added = []
        for i, clip in enumerate(clips):
            writer = (a, b)[i % 2]  # alternate: every write is followed by reads on both
            with httpx.Client(base_url=writer, timeout=120) as client:
                added.append(add_clip(client, clip))
            answers = [identify(url, query.path) for url in (a, b)]
            assert ranking(answers[0]) == ranking(answers[1])
            assert sum(h["n_tracks"] for h in answers[0]["singers"]) == i + 1
        # A removal through one replica is seen by the other at once.
        with httpx.Client(base_url=a, timeout=60) as client:
            gone = client.delete(f"/tracks/{added[0]['id']}", headers={"X-API-Key": API_KEY})
        assert gone.is_success, gone.text
        answers = [identify(url, query.path) for url in (a, b)]
        assert ranking(answers[0]) == ranking(answers[1])
        assert sum(h["n_tracks"] for h in answers[1]["singers"]) == len(clips) - 1
    finally:
        for r in replicas:
            r.kill()
