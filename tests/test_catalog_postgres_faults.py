"""The PostgreSQL catalogue when its server dies: kill -9 during concurrent writes loses no
acknowledged write (tests/support/postgres_crash.py), and a catalogue whose server went
away raises CatalogUnavailableError, then works again once the server is back, without
reopening."""

from __future__ import annotations

import time

import numpy as np
import pytest

import catalog.postgres as pg_catalog
from catalog import open_catalog
from catalog.errors import CatalogUnavailableError
from tests.support.postgres import postgres_in
from tests.support.postgres_crash import crash_trial
from tests.test_catalog import DIM, fill, unit

TRIALS = 10  # bench/bench_postgres_faults.py runs 100 (docs/benchmarks/catalog-faults.md)


@pytest.fixture
def server(tmp_path):
    with postgres_in(tmp_path) as server:
        yield server


def test_the_catalogue_is_unavailable_while_its_server_is_down_then_recovers(server, monkeypatch):
    monkeypatch.setattr(pg_catalog, "POOL_TIMEOUT_S", 1.0)
    rng = np.random.default_rng(0)
    with open_catalog(f"{server.dsn()}?schema=outage", dim=DIM) as c:
        tracks = fill(c, rng, n=6)
        server.kill()
        calls = [lambda: c.get_track(tracks[0].id), lambda: c.search_tracks(unit(rng), 3)]
        calls.append(lambda: c.add_track(unit(rng), **{**vars_of(tracks[0]), "content_hash": "x"}))
        down = time.monotonic()
        while time.monotonic() - down < 3 * pg_catalog.RECONNECT_S:  # past the pool's give-up
            for call in calls:
                start = time.monotonic()
                with pytest.raises(CatalogUnavailableError):
                    call()
                assert time.monotonic() - start < 10
        server.start()
        assert c.get_track(tracks[0].id) == tracks[0]  # the same handle, no reopening
        assert len(c.search_tracks(unit(rng), 3)) == 3
        c.add_track(unit(rng), **{**vars_of(tracks[0]), "content_hash": "after"})
        assert len(c) == 7


def vars_of(track) -> dict:
    keys = ("singer", "domain", "duration_s", "n_segments", "content_hash", "checkpoint_id")
    return {k: getattr(track, k) for k in keys}


@pytest.mark.slow
def test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(server):
    results = [crash_trial(server, seed) for seed in range(TRIALS)]
    assert sum(r.acknowledged for r in results) > 20 * TRIALS  # the writers got going
    assert sum(r.removals for r in results) > 0
    for r in results:
        assert r.lost == [] and r.resurrected == [] and r.torn == [], r
        assert r.model_error < 1e-5, r


@pytest.mark.e2e
def test_the_service_answers_503_while_the_database_is_away_then_recovers(
    server, tmp_path, random_checkpoint, monkeypatch
):
    """A real uvicorn on a PostgreSQL catalogue: kill -9 the server, and /identify, /tracks and
    /readyz answer 503 `catalog_unavailable` (with Retry-After, no address of the database);
    restart it, and the same process answers again."""
    from service.settings import Settings
    from tests.support.live import API_KEY, LiveServer, add_clip, make_clip, upload

    monkeypatch.setattr(pg_catalog, "POOL_TIMEOUT_S", 1.0)
    settings = Settings(
        catalog=f"{server.dsn()}?schema=service",
        checkpoint=random_checkpoint,
        device="cpu",
        api_key=API_KEY,
        _env_file=None,
    )
    clips = [make_clip(tmp_path, v, "mono", 0) for v in range(2)]
    with LiveServer(settings) as srv, srv.client() as client:
        added = [add_clip(client, c) for c in clips]
        assert upload(client, "/identify", clips[1].path).status_code == 200
        server.kill()
        for answer in (
            upload(client, "/identify", clips[1].path),
            client.get(f"/tracks/{added[0]['id']}"),
            client.get("/readyz"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "catalog_unavailable"
            assert "Retry-After" in answer.headers and str(server.port) not in answer.text
        server.start()
        r = upload(client, "/identify", clips[1].path)
        assert r.status_code == 200, r.text
        assert r.json()["singers"][0]["name"] == clips[1].singer
        assert client.get("/readyz").status_code == 200
