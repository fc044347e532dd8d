"""Indexed roots, whole-record restores and generation switches, on every backend (SQLite +
FAISS, Qdrant in local mode, PostgreSQL on a real server): what exports, imports and
migrations build on."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from catalog import Catalog, open_catalog
from catalog.errors import CatalogError, CatalogRetiredError, DuplicateTrackError
from catalog.records import StoredTrack
from catalog.sqlite_schema import CATALOG_FILE, SCHEMA_VERSION, UPGRADES
from tests.test_catalog import DIM, assert_search_matches_numpy, fill, item, reference_singers, unit

BACKENDS = ("sqlite", "qdrant-local", "postgres")


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture(params=BACKENDS)
def target(request, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_dsn")  # a schema of its own
    return {
        "sqlite": str(tmp_path / "index"),
        "qdrant-local": f"qdrant+local://{tmp_path / 'qdrant'}?collection=gen",
    }[request.param]


def records(catalog) -> dict[int, tuple]:
    """id -> (track, vector) of every stored track."""
    return {r.track.id: (r.track, r.vector) for r in catalog.iter_stored()}


def test_roots_are_recorded_once_and_kept(target):
    with open_catalog(target, dim=DIM) as c:
        assert c.roots() == []
        c.add_roots(["/music/b", "/music/a"])
        c.add_roots(["/music/a"])
    with open_catalog(target, dim=DIM) as c:
        assert c.roots() == ["/music/a", "/music/b"]


def test_iter_stored_equals_tracks_and_vectors(target, rng):
    with open_catalog(target, dim=DIM) as c:
        fill(c, rng, n=12)
        stored = list(c.iter_stored())
        assert [r.track for r in stored] == list(c.iter_tracks())
        for r in stored:
            np.testing.assert_array_equal(r.vector, c.get_vector(r.track.id))


def test_restore_copies_ids_metadata_and_models(target, tmp_path, rng):
    with Catalog.open(tmp_path / "source", dim=DIM) as source:
        fill(source, rng, n=20, singers=4)
        source.remove_tracks([2, 5])
        copied = list(source.iter_stored())
        with open_catalog(target, dim=DIM) as c:
            restored = c.restore_tracks(copied)
            assert [t.id for t in restored] == [r.track.id for r in copied]
            assert c.restore_tracks(copied[:3]) and len(c) == len(copied)  # idempotent
            mine, theirs = records(c), records(source)
            assert mine.keys() == theirs.keys()
            for i, (track, vector) in mine.items():
                keep = ("id", "singer", "domain", "path", "title", "content_hash", "created_at")
                assert {k: getattr(track, k) for k in keep} == {
                    k: getattr(theirs[i][0], k) for k in keep
                }
                np.testing.assert_allclose(vector, theirs[i][1], atol=1e-6)
            assert_search_matches_numpy(c, unit(rng))
            # Overwriting a track moves it between singers and domains; the models follow.
            first = copied[0]
            moved = StoredTrack(
                first.track.__class__(
                    **{**vars(first.track), "singer": "someone new", "domain": "mixed"}
                ),
                first.vector,
            )
            c.restore_tracks([moved])
            assert c.get_track(first.track.id).singer == "someone new"
            models = reference_singers(c, "mixed")
            got = c.search_singers(models["someone new"], 1, "mixed")[0]
            assert got.singer.name == "someone new" and got.score == pytest.approx(1.0)
            clash = StoredTrack(
                first.track.__class__(**{**vars(copied[1].track), "id": 10_000}), copied[1].vector
            )
            with pytest.raises(DuplicateTrackError):
                c.restore_tracks([clash])


def test_switch_makes_the_shadow_live_and_retires_the_old(target, rng):
    with open_catalog(target, dim=DIM) as live:
        fill(live, rng, n=10)
        live.add_roots(["/music"])
        last_id = max(live.track_ids())
        live.remove_tracks([last_id])  # its id must never come back
        shadow = live.open_generation("gen-b", dim=DIM)
        shadow.restore_tracks(live.iter_stored())
        shadow.add_roots(live.roots())
        shadow.record_build("ckpt-b", "/models/b.pt")
        assert live.live_generation() == "" and shadow.live_generation() == ""
        assert live.switch_to(shadow, lambda: False) is False  # not ready: nothing changes
        assert live.live_generation() == "" and not live.generation().retired
        assert live.switch_to(shadow, lambda: True) is True
        assert live.live_generation() == shadow.live_generation() == "gen-b"
        assert live.generation().retired
        with pytest.raises(CatalogRetiredError):
            live.add_track(**item(rng, 99, "late", "mono"))
        assert len(live.search_tracks(unit(rng), 3)) == 3  # still readable
        shadow.close()
    with open_catalog(target, dim=DIM) as now:
        info = now.generation()
        assert (info.name, info.checkpoint_id, info.checkpoint_file) == (
            "gen-b",
            "ckpt-b",
            "/models/b.pt",
        )
        assert now.roots() == ["/music"] and len(now) == 9
        new = now.add_track(**item(rng, 100, "new singer", "mono"))
        assert new.id > last_id
        with pytest.raises(CatalogError):
            now.switch_to(now, lambda: True)


def test_an_interrupted_switch_is_finished_on_open(target, rng, monkeypatch):
    """A crash after the old generation was retired but before the pointer moved: opening
    the catalogue finishes the switch instead of leaving it unwritable. PostgreSQL switches
    in one transaction: the crash rolls it back, the old generation stays live and writable,
    and the switch can be made again."""
    import catalog.postgres_generations as postgres_gen
    import catalog.qdrant_generations as qdrant_gen
    import catalog.sqlite_generations as sqlite_gen

    one_transaction = target.startswith("postgresql://")
    with open_catalog(target, dim=DIM) as live:
        fill(live, rng, n=4)
        shadow = live.open_generation("next", dim=DIM)
        shadow.restore_tracks(live.iter_stored())

        def crash(*_):
            raise OSError("power cut")

        for module in (qdrant_gen, sqlite_gen, postgres_gen):
            monkeypatch.setattr(module, "write_live", crash)
        with pytest.raises(OSError):
            live.switch_to(shadow, lambda: True)
        monkeypatch.undo()
        assert live.live_generation() == ""
        assert live.generation().retired is not one_transaction
        if one_transaction:
            live.add_track(**item(rng, 49, "before", "mono"))  # still the live one
            assert live.switch_to(shadow, lambda: True) is True
        shadow.close()
    with open_catalog(target, dim=DIM) as c:
        assert c.generation().name == "next" and c.live_generation() == "next"
        c.add_track(**item(rng, 50, "after", "mono"))


def test_a_schema_1_catalogue_is_upgraded_on_open(tmp_path, rng):
    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(folder / CATALOG_FILE)
    for statement in filter(str.strip, UPGRADES[1].split(";")):
        db.execute(statement)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("dim", str(DIM)), ("generation", "1"), ("uuid", "u"), ("created_at", "then")],
    )
    db.execute("INSERT INTO singers (name) VALUES ('old singer')")
    vector = unit(rng)
    db.execute(
        "INSERT INTO tracks (singer_id, domain, path, duration_s, n_segments, content_hash, "
        "checkpoint_id, created_at, vector) VALUES (1, 'mono', '/m/a.wav', 5, 1, 'h', 'c', "
        "'then', ?)",
        (vector.tobytes(),),
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Catalog.open(folder, dim=DIM) as c:
        assert c.get_track(1).singer == "old singer" and c.roots() == []
        c.add_roots(["/m"])
        assert c.search_tracks(vector, 1)[0].track.id == 1
    db = sqlite3.connect(folder / CATALOG_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
