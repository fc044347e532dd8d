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
