"""One contract, every backend: the same assertions on SQLite+FAISS, on Qdrant (local mode) and
on PostgreSQL + pgvector (a real server, started by the `postgres_server` fixture).

The backend-agnostic tests of tests/test_catalog.py are imported and run here against each
backend through the parametrized `catalog` fixture; the tests below add what that module
does not cover (listing, filters, checkpoints, two handles writing at once, URLs).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from catalog import Catalog, CatalogBackend, CatalogError, open_catalog
from catalog.postgres import PostgresCatalog
from catalog.qdrant import QdrantCatalog
from tests import test_catalog
from tests.test_catalog import (
    DIM,
    assert_search_matches_numpy,
    fill,
    item,
    reference_singers,
    stored,
    unit,
)

# The backend-agnostic tests of tests/test_catalog.py, collected here again against every
# backend of the `catalog` fixture below (pytest collects module globals named test_*).
SHARED_TESTS = (
    "test_a_singer_goes_with_their_last_track",
    "test_a_stored_vector_is_the_normalised_input",
    "test_concurrent_writers_and_readers",
    "test_duplicates_are_refused_and_replace_keeps_the_id",
    "test_export_csv_is_a_manifest_and_json_has_vectors",
    "test_invalid_tracks_are_refused",
    "test_moving_a_track_to_another_singer_updates_both_models",
    "test_search_equals_brute_force",
    "test_singer_models_follow_adds_and_removes",
    "test_stats_and_pagination",
)
globals().update({name: getattr(test_catalog, name) for name in SHARED_TESTS})

BACKENDS = ("sqlite", "qdrant-memory", "qdrant-local", "postgres")
KINDS = {"sqlite": Catalog, "postgres": PostgresCatalog}


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def target(backend, tmp_path, request) -> str:
    if backend == "postgres":
        return request.getfixturevalue("postgres_dsn")
    return {
        "sqlite": str(tmp_path / "index"),
        "qdrant-memory": "qdrant+memory://contract",
        "qdrant-local": f"qdrant+local://{tmp_path / 'qdrant'}?collection=contract",
    }[backend]


@pytest.fixture
def catalog(target):
    with open_catalog(target, dim=DIM) as c:
        yield c


@pytest.fixture
def second_handle(backend, catalog, target):
    """Another handle on the same catalogue, as a second process would hold (SQLite: a new
    connection; PostgreSQL: a second connection pool; Qdrant: a second catalogue object on the
    same client, i.e. the same server)."""
    if backend in ("sqlite", "postgres"):
        with open_catalog(target, dim=DIM) as other:
            yield other
    else:
        yield QdrantCatalog.open(
            catalog._client, catalog.collection, location=catalog.location, dim=DIM
        )


def test_backends_implement_the_interface(catalog, backend):
    assert isinstance(catalog, CatalogBackend)
    assert isinstance(catalog, KINDS.get(backend, QdrantCatalog))


def test_list_tracks_pages_by_id_with_filters(catalog, rng):
    tracks = fill(catalog, rng, n=23, singers=3)
    assert [t.id for t in tracks] == sorted(t.id for t in tracks)  # ids grow with time
    pages, after = [], 0
    while page := catalog.list_tracks(after_id=after, limit=5):
        assert len(page) <= 5
        pages.append(page)
        after = page[-1].id
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [t for p in pages for t in p] == tracks
    chosen = catalog.list_tracks(singer="singer 1", domain="mixed", limit=100)
    assert chosen == [t for t in tracks if t.singer == "singer 1" and t.domain == "mixed"]
    assert catalog.list_tracks(after_id=tracks[-1].id) == []
    assert catalog.list_tracks(limit=0) == []
    assert list(catalog.iter_tracks()) == tracks


def test_search_filters_by_singer_and_min_score(catalog, rng):
    fill(catalog, rng, n=30, singers=5)
    query = unit(rng)
    for domain in (None, "mono", "mixed"):
        ids, vectors, tracks = stored(catalog, domain)
        mine = np.array([t.singer == "singer 2" for t in tracks])
        scores = vectors[mine] @ query
        order = np.argsort(-scores)[:4]
        hits = catalog.search_tracks(query, 4, domain, singer="singer 2")
        assert [h.track.id for h in hits] == ids[mine][order].tolist()
        np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)
        threshold = float(np.sort(vectors @ query)[-3])  # exactly three reach it
        hits = catalog.search_tracks(query, 10, domain, min_score=threshold - 1e-6)
        assert len(hits) == 3 and all(h.score >= threshold - 1e-5 for h in hits)
    assert catalog.search_tracks(query, 5, singer="nobody") == []


def test_checkpoints_are_reported_for_refusal(catalog, rng):
    fill(catalog, rng, n=4)
    catalog.add_track(**item(rng, 50, "x", checkpoint_id="ckpt-old"))
    assert catalog.checkpoint_ids() == {"ckpt-a", "ckpt-old"}
    assert catalog.stats()["checkpoint_ids"] == {"ckpt-a": 4, "ckpt-old": 1}
    old = catalog.track_ids(checkpoint_id="ckpt-old")
    assert len(old) == 1
    catalog.remove_tracks(old)
    assert catalog.checkpoint_ids() == {"ckpt-a"}


def test_two_handles_writing_at_once_converge(catalog, second_handle, rng):
    """Two writers (processes sharing a catalogue) add, move and remove tracks of the same
    singers concurrently; afterwards each singer model is the mean of the stored vectors,
    seen identically through both handles."""
    errors: list[Exception] = []

    def writer(handle, w: int):
        try:
            local = np.random.default_rng(w)
            added = [
                handle.add_track(**item(local, 1000 * w + i, f"shared {i % 2}", "mixed"))
                for i in range(8)
            ]
            handle.remove_track(added[0].id)
            handle.update_track(added[1].id, singer="shared 0")
        except Exception as err:
            errors.append(err)

    threads = [
        threading.Thread(target=writer, args=(h, w))
        for w, h in enumerate((catalog, second_handle, catalog, second_handle))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(catalog) == len(second_handle) == 4 * 7
    for handle in (catalog, second_handle):
        models = reference_singers(handle, "mixed")
        for name, model in models.items():
            singer = handle.get_singer(name)
            np.testing.assert_allclose(handle.singer_vector(singer.id, "mixed"), model, atol=1e-5)
        assert_search_matches_numpy(handle, unit(rng))


@pytest.mark.parametrize("backend", ["qdrant-local", "postgres"])
def test_a_catalogue_reopens_as_it_was_and_checks_its_dimension(target, rng):
    with open_catalog(target, dim=DIM) as c:
        tracks = fill(c, rng, n=8)
    with open_catalog(target, dim=None) as c:
        assert c.dim == DIM and list(c.iter_tracks()) == tracks
        assert_search_matches_numpy(c, unit(rng))
    with pytest.raises(CatalogError, match="dimension"):
        open_catalog(target, dim=DIM * 2)


def test_an_unreachable_qdrant_server_is_a_catalog_error():
    from tests.support.live import free_port

    with pytest.raises(CatalogError, match="Qdrant"):
        open_catalog(f"qdrant://127.0.0.1:{free_port()}/nothing", dim=DIM)


@pytest.fixture
def rng():
    return np.random.default_rng(1)


@pytest.mark.e2e
def test_service_on_qdrant_refuses_another_checkpoints_catalogue(tmp_path, random_checkpoint):
    """The service's checkpoint check (409 / readyz 503) holds on a Qdrant catalogue too."""
    from model.checkpoint import checkpoint_id, make_random_checkpoint
    from service.settings import Settings
    from tests.support.live import API_KEY, LiveServer, add_clip, make_clip, upload

    def settings(checkpoint) -> Settings:
        url = f"qdrant+local://{tmp_path / 'q'}"
        return Settings(catalog=url, checkpoint=checkpoint, device="cpu", api_key=API_KEY)

    clips = [make_clip(tmp_path, v, "mono", 0) for v in range(2)]
    with LiveServer(settings(random_checkpoint)) as srv, srv.client() as client:
        old = [add_clip(client, c) for c in clips]
    other = make_random_checkpoint(tmp_path / "other.pt", seed=1)
    with LiveServer(settings(other)) as srv, srv.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "checkpoint_mismatch"
        r = upload(client, "/identify", clips[0].path)
        assert r.status_code == 409
        assert r.json()["catalog_checkpoints"] == [checkpoint_id(random_checkpoint)]
        for track in old:
            gone = client.delete(f"/tracks/{track['id']}", headers={"X-API-Key": API_KEY})
            assert gone.status_code == 200
        assert client.get("/readyz").status_code == 200
        assert upload(client, "/identify", clips[0].path).status_code == 200


def test_indexer_commands_work_on_a_qdrant_catalogue(tmp_path, rng, capsys):
    """`stats`, `export` and `remove` through the CLI, on a catalogue URL."""
    import json

    from indexer.__main__ import main

    url = f"qdrant+local://{tmp_path / 'q'}"
    with open_catalog(url, dim=DIM) as c:
        tracks = fill(c, rng, n=6, singers=2)
    capsys.readouterr()
    assert main(["stats", "--catalog", url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_tracks"] == {"mono": 3, "mixed": 3} and stats["n_singers"] == 2
    assert main(["export", "--catalog", url, "--format", "json"]) == 0
    assert [t["id"] for t in json.loads(capsys.readouterr().out)] == [t.id for t in tracks]
    assert main(["remove", "--catalog", url, "--singer", "singer 0"]) == 0
    with open_catalog(url, dim=None) as c:
        assert [t.id for t in c.iter_tracks()] == [t.id for t in tracks if t.singer != "singer 0"]
        assert c.get_singer("singer 0") is None
