"""What the PostgreSQL catalogue adds to the contract suite, on a real server: migrations,
its dimension, the HNSW path (brute force, the planner's choice of index, dead rows, domain
filters), and the indexer's commands on a `postgresql://` URL.

Outages and kill -9 are in tests/test_catalog_postgres_faults.py.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import psycopg
import pytest

import catalog.postgres_reads as pg_reads
from catalog import CatalogError, open_catalog
from catalog.errors import CatalogUnavailableError
from catalog.postgres_reads import search_sql
from catalog.postgres_schema import SCHEMA_VERSION
from tests.support.live import free_port
from tests.test_catalog import DIM, assert_search_matches_numpy, fill, item, stored, unit


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def sql_of(dsn: str, query: str, params: list | None = None) -> list[tuple]:
    """Run `query` in the catalogue's schema, as a DBA would."""
    base, _, schema = dsn.partition("?schema=")
    with psycopg.connect(base, options=f"-c search_path={schema},public") as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_an_empty_catalogue_of_another_dimension_is_recreated(postgres_dsn, rng):
    with open_catalog(postgres_dsn, dim=DIM) as c:
        c.remove_tracks([t.id for t in fill(c, rng, n=3)])
    with open_catalog(postgres_dsn, dim=2 * DIM) as c:
        assert c.dim == 2 * DIM and len(c) == 0
        c.add_track(**{**item(rng, 1, "a"), "vector": np.ones(2 * DIM)})
    assert sql_of(postgres_dsn, "SELECT value FROM meta WHERE key = 'dim'") == [(str(2 * DIM),)]


def test_a_catalogue_of_a_newer_schema_is_refused(postgres_dsn, rng):
    with open_catalog(postgres_dsn, dim=DIM) as c:
        fill(c, rng, n=2)
    sql_of(postgres_dsn, "INSERT INTO schema_version (version) VALUES (%s)", [99])
    with pytest.raises(CatalogError, match="newer"):
        open_catalog(postgres_dsn, dim=DIM)


def test_replicas_starting_together_migrate_once(postgres_dsn):
    opened, errors = [], []

    def start():
        try:
            opened.append(open_catalog(postgres_dsn, dim=DIM))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 4
    versions = sql_of(postgres_dsn, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    for c in opened:
        c.close()


def test_the_url_sets_the_search_breadth_and_the_pool(postgres_dsn):
    url = f"{postgres_dsn}&ef_search=57&pool_size=3&connect_timeout=4"  # the last is libpq's
    with open_catalog(url, dim=DIM) as c:
        assert (c.ef_search, c._pool.max_size) == (57, 3)
        assert c.stats()["index"] == "pgvector-hnsw (ef_search 57)"


def test_an_unreachable_server_is_catalog_unavailable():
    with pytest.raises(CatalogUnavailableError):
        open_catalog(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", dim=DIM)


def test_the_planner_uses_each_domains_hnsw_index_unless_exact(postgres_dsn, rng):
    with open_catalog(postgres_dsn, dim=DIM) as c:
        fill(c, rng, n=4)
        params = {"q": unit(rng), "k": 5, "singer": "singer 1"}
        with c._pool.connection() as conn:
            conn.execute("SET enable_seqscan = off")  # a 4-row table: the index must still fit

            def plan(domains, exact, singer=False):
                query = search_sql(domains, exact=exact, singer=singer)
                return "\n".join(
                    r[0] for r in conn.execute(b"EXPLAIN " + query.as_bytes(conn), params)
                )

            both = plan(["mono", "mixed"], exact=False)
            assert "tracks_mono_hnsw" in both and "tracks_mixed_hnsw" in both
            assert "tracks_mixed_hnsw" not in plan(["mono"], exact=False)
            assert "hnsw" not in plan(["mono"], exact=True)
            assert "hnsw" not in plan(["mono", "mixed"], exact=True, singer=True)


@pytest.fixture
def hnsw_only(monkeypatch):
    """Searches through the HNSW indexes, however small the catalogue."""
    monkeypatch.setattr(pg_reads, "EXACT_MAX_TRACKS", 0)


def test_hnsw_search_equals_brute_force_on_a_small_catalogue(postgres_dsn, rng, hnsw_only):
    with open_catalog(postgres_dsn, dim=DIM) as c:
        fill(c, rng, n=200, singers=20)
        for _ in range(5):
            assert_search_matches_numpy(c, unit(rng), k=10)


def test_rows_deleted_but_not_vacuumed_never_shorten_a_search(postgres_dsn, rng, hnsw_only):
    """The graph still holds deleted rows until VACUUM; iterative scans go on past them, so a
    search returns k live tracks even when the nearest ef_search candidates are all dead."""
    query = unit(rng)
    with open_catalog(postgres_dsn, dim=DIM) as c:
        sql_of(postgres_dsn, "ALTER TABLE tracks SET (autovacuum_enabled = false)")
        near = [item(rng, i, f"s{i % 5}", vector=query + 0.3 * unit(rng)) for i in range(60)]
        c.add_tracks(near + [item(rng, 100 + i, f"s{i % 5}") for i in range(60)])
        c.remove_tracks(c.track_ids()[:60])  # the 60 nearest
        c.ef_search = 1  # hnsw.ef_search = k
        ids, vectors, _ = stored(c, "mono")
        hits = c.search_tracks(query, 30, "mono")
        assert [h.track.id for h in hits] == ids[np.argsort(-(vectors @ query))[:30]].tolist()


def test_a_domain_search_finds_k_of_its_own_among_closer_others(postgres_dsn, rng, hnsw_only):
    query = unit(rng)
    with open_catalog(postgres_dsn, dim=DIM) as c:
        close = [item(rng, i, "m", "mixed", vector=query + 0.2 * unit(rng)) for i in range(150)]
        c.add_tracks(close + [item(rng, 500 + i, "far", "mono") for i in range(25)])
        ids, vectors, _ = stored(c, "mono")
        hits = c.search_tracks(query, 20, "mono")
        assert [h.track.id for h in hits] == ids[np.argsort(-(vectors @ query))[:20]].tolist()
        assert all(h.track.domain == "mono" for h in hits)


def test_a_batch_is_one_transaction(postgres_dsn, rng):
    with open_catalog(postgres_dsn, dim=DIM) as c:
        fill(c, rng, n=2)
        batch = [item(rng, 10, "new"), item(rng, 11, "new"), item(rng, 0, "singer 0")]
        with pytest.raises(CatalogError):
            c.add_tracks(batch)  # the last one is a duplicate: none of them lands
        assert len(c) == 2 and c.get_singer("new") is None


@pytest.mark.e2e
def test_indexer_commands_work_on_a_postgres_catalogue(postgres_dsn, tmp_path, rng, capsys):
    """`stats`, `export` and `remove` through the CLI, on a catalogue URL."""
    from indexer.__main__ import main

    with open_catalog(postgres_dsn, dim=DIM) as c:
        tracks = fill(c, rng, n=6, singers=2)
    capsys.readouterr()
    assert main(["stats", "--catalog", postgres_dsn, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_tracks"] == {"mono": 3, "mixed": 3} and stats["n_singers"] == 2
    assert main(["export", "--catalog", postgres_dsn, "--format", "json", "--vectors"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in exported] == [t.id for t in tracks]
    with open_catalog(postgres_dsn, dim=None) as c:
        np.testing.assert_allclose(exported[0]["vector"], c.get_vector(tracks[0].id), atol=1e-6)
    assert main(["remove", "--catalog", postgres_dsn, "--singer", "singer 0"]) == 0
    assert main(["remove", "--catalog", postgres_dsn, str(tracks[1].id)]) == 0
    with open_catalog(postgres_dsn, dim=None) as c:
        left = [t.id for t in tracks if t.singer != "singer 0" and t.id != tracks[1].id]
        assert [t.id for t in c.iter_tracks()] == left
        assert c.get_singer("singer 0") is None


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    from tests.support.synth import VOICES, backing, sing, write

    root = tmp_path_factory.mktemp("music")
    for v in range(3):
        for take in range(2):
            y = 0.7 * sing(VOICES[v], 7.0, seed=take) + backing(7.0, seed=take)
            write(root / f"voice {v}" / f"take{take}.wav", y)
    (root / "voice 1" / "broken.flac").write_bytes(b"fLaC but not really" * 50)
    return root


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_the_indexer_fills_a_postgres_catalogue_as_an_sqlite_one(
    engine, music, postgres_dsn, random_checkpoint, tmp_path, request
):
    """`python -m indexer --catalog postgresql://... --engine local|ray`: the tracks and
    vectors of the same job into SQLite; a second run adds nothing."""
    from indexer.__main__ import main

    if engine == "ray":
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        request.addfinalizer(ray.shutdown)
    args = ["--checkpoint", str(random_checkpoint), "--device", "cpu", "--no-progress"]
    assert main(["--index", str(tmp_path / "ref"), *args, str(music)]) == 1  # broken.flac
    args += ["--engine", engine]
    assert main(["--catalog", postgres_dsn, *args, str(music)]) == 1
    assert main(["--catalog", postgres_dsn, *args, str(music)]) == 1  # resumed: all skipped
    with open_catalog(str(tmp_path / "ref"), dim=None) as ref, open_catalog(postgres_dsn) as c:
        key = lambda t: (t.content_hash, t.singer, t.domain, t.path, t.n_segments)
        assert sorted(map(key, c.iter_tracks())) == sorted(map(key, ref.iter_tracks()))
        vectors = {t.content_hash: ref.get_vector(t.id) for t in ref.iter_tracks()}
        for t in c.iter_tracks():
            np.testing.assert_allclose(c.get_vector(t.id), vectors[t.content_hash], atol=1e-5)
        query = vectors[next(iter(vectors))]
        assert [h.singer.name for h in c.search_singers(query, 3, "mixed")] == [
            h.singer.name for h in ref.search_singers(query, 3, "mixed")
        ]
