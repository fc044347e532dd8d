"""Indexed roots, whole-record restores and generation switches on the PostgreSQL catalogue:
tests/test_catalog_generations.py's backend-agnostic tests on a real server, plus what the
PostgreSQL switch adds (one transaction: writers wait for it, then find their generation
retired) and the migration of a schema-1 catalogue."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from catalog import open_catalog
from catalog.errors import CatalogRetiredError
from catalog.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from tests import test_catalog_generations
from tests.test_catalog import DIM, fill, item, unit

SHARED_TESTS = (
    "test_roots_are_recorded_once_and_kept",
    "test_iter_stored_equals_tracks_and_vectors",
    "test_restore_copies_ids_metadata_and_models",
    "test_switch_makes_the_shadow_live_and_retires_the_old",
)
globals().update({name: getattr(test_catalog_generations, name) for name in SHARED_TESTS})


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def target(postgres_dsn) -> str:
    return postgres_dsn


def test_a_writer_waits_for_a_switch_then_finds_its_generation_retired(postgres_dsn, rng):
    with open_catalog(postgres_dsn, dim=DIM) as live:
        fill(live, rng, n=4)
        shadow = live.open_generation("next", dim=DIM)
        shadow.restore_tracks(live.iter_stored())
        in_ready, release = threading.Event(), threading.Event()
        outcome: list = []

        def ready() -> bool:  # the migration's last catch-up, while writers are held
            in_ready.set()
            return release.wait(30)

        def write() -> None:
            try:
                outcome.append(live.add_track(**item(rng, 77, "late", "mono")))
            except Exception as err:
                outcome.append(err)

        switcher = threading.Thread(target=lambda: live.switch_to(shadow, ready))
        switcher.start()
        assert in_ready.wait(30)
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)
        assert outcome == []  # held by the switch's lock
        assert len(live.search_tracks(unit(rng), 2)) == 2  # reads are not held
        release.set()
        switcher.join(30)
        writer.join(30)
        assert isinstance(outcome[0], CatalogRetiredError) and outcome[0].live == "next"
        assert live.live_generation() == "next" and len(shadow) == 4
        shadow.close()


def test_a_schema_1_catalogue_is_upgraded_on_open(postgres_dsn, rng):
    base, _, schema = postgres_dsn.partition("?schema=")
    with psycopg.connect(base) as conn:  # what the first release created
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}, public")
        conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        for statement in MIGRATIONS[0]:
            conn.execute(statement.format(dim=DIM))
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO meta VALUES ('dim', %s)", [str(DIM)])
    with open_catalog(postgres_dsn, dim=None) as c:
        assert c.roots() == [] and c.dim == DIM
        c.add_roots(["/m"])
        track = c.add_track(**item(rng, 1, "a"))
        assert c.search_tracks(c.get_vector(track.id), 1)[0].track == track
    with psycopg.connect(base) as conn:
        versions = conn.execute(f"SELECT version FROM {schema}.schema_version ORDER BY 1")
        assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_a_long_generation_name_gets_a_schema_within_postgres_limit(postgres_dsn, rng):
    name = "g" * 100
    with open_catalog(postgres_dsn, dim=DIM) as live, live.open_generation(name, dim=DIM) as gen:
        assert len(gen.schema) <= 63 and gen.generation().name == name
        gen.add_track(**item(rng, 1, "a"))
        assert live.switch_to(gen, lambda: True)
    with open_catalog(postgres_dsn, dim=None) as now:
        assert now.generation().name == name and len(now) == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_indexer_migrate_re_embeds_a_postgres_catalogue(postgres_dsn, tmp_path, random_checkpoint):
    """`python -m indexer migrate --catalog postgresql://...` as on SQLite: same ids and
    metadata, vectors of checkpoint B, the new generation live, the old one retired."""
    from indexer.__main__ import main
    from model.checkpoint import checkpoint_id, make_random_checkpoint
    from model.embedding import Embedder
    from tests.support.synth import VOICES, backing, sing, write

    for i in range(4):
        y = 0.7 * sing(VOICES[i % 2], 7.0, seed=i) + 0.3 * backing(7.0, seed=i)
        write(tmp_path / "music" / f"voice {i % 2}" / f"take{i}.wav", y)
    ckpt_a, ckpt_b = random_checkpoint, make_random_checkpoint(tmp_path / "b.pt", seed=1)
    args = ["--catalog", postgres_dsn, "--device", "cpu", "--no-progress"]
    assert main([*args, "--checkpoint", str(ckpt_a), str(tmp_path / "music")]) == 0
    with open_catalog(postgres_dsn, dim=None) as c:
        before = list(c.iter_tracks())
    assert main(["migrate", "--catalog", postgres_dsn, "--to", str(ckpt_b)]) == 0
    keep = ("id", "singer", "domain", "path", "title", "content_hash", "created_at")
    embedder_b = Embedder.from_checkpoint(ckpt_b, device="cpu")
    with open_catalog(postgres_dsn, dim=None) as c:
        after = list(c.iter_tracks())
        assert [[getattr(t, k) for k in keep] for t in after] == [
            [getattr(t, k) for k in keep] for t in before
        ]
        assert c.checkpoint_ids() == {checkpoint_id(ckpt_b)}
        assert c.generation().checkpoint_id == checkpoint_id(ckpt_b)
        for t in after:
            ref = embedder_b.embed_file(t.path, t.domain).vector
            np.testing.assert_allclose(c.get_vector(t.id), ref, atol=1e-5)
        with c.open_generation("", dim=None) as old:
            assert old.generation().retired and len(old) == len(before)
