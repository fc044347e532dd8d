"""The catalogue: real SQLite files and FAISS indexes, checked against numpy on stored vectors."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import threading

import numpy as np
import pytest

from catalog.store import (
    CATALOG_FILE,
    Catalog,
    CatalogError,
    DuplicateTrackError,
    TrackNotFoundError,
)
from model.manifest import read_manifest

DIM = 32


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def item(rng, i: int, singer: str, domain: str = "mono", **kw) -> dict:
    return {
        "vector": unit(rng),
        "singer": singer,
        "domain": domain,
        "duration_s": 10.0 + i,
        "n_segments": 3,
        "content_hash": f"hash{i}",
        "checkpoint_id": "ckpt-a",
        "path": f"/music/{singer}/{i}.wav",
        "title": f"take {i}",
        **kw,
    }


def fill(catalog: Catalog, rng, n: int = 30, singers: int = 5) -> list:
    items = [item(rng, i, f"singer {i % singers}", ("mono", "mixed")[i % 2]) for i in range(n)]
    return catalog.add_tracks(items)


def stored(catalog: Catalog, domain: str | None = None):
    """(ids, vectors, tracks) of the catalogue read back from SQLite, optionally one domain."""
    tracks = [t for t in catalog.iter_tracks() if domain in (None, t.domain)]
    vectors = np.stack([catalog.get_vector(t.id) for t in tracks] or [np.zeros((0, DIM))])
    return np.array([t.id for t in tracks], np.int64), vectors.reshape(-1, DIM), tracks


def reference_singers(catalog: Catalog, domain: str) -> dict[str, np.ndarray]:
    """Singer models the paper's way: normalised mean of normalised track vectors."""
    _, vectors, tracks = stored(catalog, domain)
    models = {}
    for name in {t.singer for t in tracks}:
        mean = vectors[[t.singer == name for t in tracks]].mean(axis=0)
        models[name] = mean / np.linalg.norm(mean)
    return models


def assert_search_matches_numpy(catalog: Catalog, query: np.ndarray, k: int = 7) -> None:
    for domain in ("mono", "mixed", None):
        ids, vectors, _ = stored(catalog, domain)
        scores = vectors @ query
        order = np.argsort(-scores)[:k]
        hits = catalog.search_tracks(query, k, domain)
        assert [h.track.id for h in hits] == ids[order].tolist()
        np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)
        assert all(domain in (None, h.track.domain) for h in hits)
    for domain in ("mono", "mixed"):
        models = reference_singers(catalog, domain)
        names = sorted(models, key=lambda n: -float(models[n] @ query))
        hits = catalog.search_singers(query, 3, domain)
        assert [h.singer.name for h in hits] == names[:3]
        np.testing.assert_allclose(
            [h.score for h in hits], [models[n] @ query for n in names[:3]], atol=1e-5
        )


@pytest.fixture
def rng():
    return np.random.default_rng(1)


@pytest.fixture
def catalog(tmp_path):
    with Catalog.open(tmp_path / "index", dim=DIM) as c:
        yield c


def test_search_equals_brute_force(catalog, rng):
    fill(catalog, rng)
    for _ in range(3):
        assert_search_matches_numpy(catalog, unit(rng))


def test_a_stored_vector_is_the_normalised_input(catalog, rng):
    raw = 3.0 * unit(rng)
    track = catalog.add_track(
        raw,
        singer="a",
        domain="mixed",
        duration_s=5.0,
        n_segments=1,
        content_hash="h",
        checkpoint_id="c",
    )
    np.testing.assert_allclose(catalog.get_vector(track.id), raw / 3.0, atol=1e-6)
    hit = catalog.search_tracks(raw, 1)[0]
    assert hit.track == track and hit.score == pytest.approx(1.0, abs=1e-5)


def test_singer_models_follow_adds_and_removes(catalog, rng):
    tracks = fill(catalog, rng, n=12, singers=3)
    query = unit(rng)
    assert_search_matches_numpy(catalog, query)
    # Add a track to one singer: its model moves to the new mean.
    catalog.add_track(**item(rng, 100, "singer 1", "mixed"))
    assert_search_matches_numpy(catalog, query)
    # Remove two tracks (one per domain).
    removed = catalog.remove_track(tracks[1].id)
    assert removed == tracks[1]
    catalog.remove_tracks([tracks[4].id])
    assert_search_matches_numpy(catalog, query)
    with pytest.raises(TrackNotFoundError):
        catalog.get_track(tracks[1].id)
    with pytest.raises(TrackNotFoundError):
        catalog.remove_track(tracks[1].id)


def test_a_singer_goes_with_their_last_track(catalog, rng):
    only = catalog.add_track(**item(rng, 1, "solo", "mono"))
    other = catalog.add_track(**item(rng, 2, "other", "mixed"))
    total, singers = catalog.list_singers()
    assert total == 2 and {s.name: s.n_tracks for s in singers}["solo"] == {"mono": 1, "mixed": 0}
    hits = catalog.search_singers(catalog.get_vector(only.id), 5, "mono")
    assert [(h.singer.name, h.n_tracks) for h in hits] == [("solo", 1)]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    catalog.remove_track(only.id)
    assert catalog.search_singers(catalog.get_vector(other.id), 5, "mono") == []
    assert [s.name for s in catalog.list_singers()[1]] == ["other"]
    assert catalog.get_singer("solo") is None


def test_moving_a_track_to_another_singer_updates_both_models(catalog, rng):
    tracks = fill(catalog, rng, n=10, singers=2)
    moved = catalog.update_track(tracks[0].id, singer="singer 1", title="renamed")
    assert (moved.singer, moved.title, moved.id) == ("singer 1", "renamed", tracks[0].id)
    assert_search_matches_numpy(catalog, unit(rng))


def test_duplicates_are_refused_and_replace_keeps_the_id(catalog, rng):
    first = catalog.add_track(**item(rng, 1, "a"))
    with pytest.raises(DuplicateTrackError) as err:
        catalog.add_track(**item(rng, 1, "a"))
    assert err.value.track_id == first.id
    # A batch with a duplicate writes nothing.
    with pytest.raises(DuplicateTrackError):
        catalog.add_tracks([item(rng, 2, "a"), item(rng, 1, "a")])
    assert len(catalog) == 1
    # The same content embedded by another checkpoint replaces the old vector in place.
    new = item(rng, 1, "b", checkpoint_id="ckpt-b")
    replaced = catalog.add_tracks([new], replace=True)[0]
    assert replaced.id == first.id and replaced.checkpoint_id == "ckpt-b"
    assert replaced.singer == "b" and replaced.created_at == first.created_at
    assert catalog.checkpoint_ids() == {"ckpt-b"}
    assert catalog.find_track("hash1", "ckpt-a", "mono") is None
    assert catalog.find_track("hash1", "ckpt-b", "mono") == replaced
    np.testing.assert_allclose(catalog.get_vector(first.id), new["vector"], atol=1e-6)
    assert [s.name for s in catalog.list_singers()[1]] == ["b"]  # "a" lost its only track
    assert_search_matches_numpy(catalog, unit(rng))


def test_reopening_loads_the_saved_indexes(tmp_path, rng):
    with Catalog.open(tmp_path, dim=DIM) as c:
        fill(c, rng)
    saved = (tmp_path / "faiss-flat.npz").stat().st_mtime_ns
    with Catalog.open(tmp_path, dim=DIM) as c:
        assert_search_matches_numpy(c, unit(rng))
    assert (tmp_path / "faiss-flat.npz").stat().st_mtime_ns == saved  # loaded, not rebuilt


def build_history(directory, rng) -> None:
    """Three writes: the FAISS file saved after the first, and again on close."""
    with Catalog.open(directory, dim=DIM) as c:
        fill(c, rng, n=10)
    shutil.copy(directory / "faiss-flat.npz", directory / "old.npz")
    with Catalog.open(directory, dim=DIM) as c:
        c.add_tracks([item(rng, 100 + i, "late singer", "mono") for i in range(4)])
        c.remove_track(1)


@pytest.mark.parametrize("damage", ["missing", "stale", "garbage", "foreign"])
def test_indexes_are_rebuilt_when_missing_stale_or_damaged(tmp_path, rng, damage):
    build_history(tmp_path / "a", rng)
    index_file = tmp_path / "a" / "faiss-flat.npz"
    if damage == "missing":
        index_file.unlink()
    elif damage == "stale":  # the file of an earlier state: a crash before saving
        shutil.copy(tmp_path / "a" / "old.npz", index_file)
    elif damage == "garbage":
        index_file.write_bytes(b"PK\x03\x04 not really a zip")
    else:  # another catalogue's file, same generation and counts, other vectors
        build_history(tmp_path / "b", np.random.default_rng(99))
        shutil.copy(tmp_path / "b" / "faiss-flat.npz", index_file)
    with Catalog.open(tmp_path / "a", dim=DIM) as c:
        assert len(c) == 13
        assert_search_matches_numpy(c, unit(rng))


def test_another_process_writes_are_seen(tmp_path, rng):
    """Two handles on one directory (as the service and the indexer): each sees the other's
    commits at its next read, and its own writes after that stay consistent."""
    with Catalog.open(tmp_path, dim=DIM) as a, Catalog.open(tmp_path, dim=DIM) as b:
        fill(a, rng, n=6)
        b.add_track(**item(rng, 50, "from b", "mono"))
        assert len(a.search_tracks(unit(rng), 100)) == 7
        a.add_track(**item(rng, 51, "from a", "mono"))  # a writes after b's commit
        b.remove_track(1)
        for c in (a, b):
            assert_search_matches_numpy(c, unit(rng))


def test_singer_models_from_running_sums_equal_the_stored_vectors(tmp_path, rng, monkeypatch):
    """Models are kept from running sums of each singer's vectors (`catalog.model_sums`):
    after 300 random adds, replacements (same content, other checkpoint or singer), moves and
    removals through two handles on one directory, with a cache smaller than the singers,
    every singer's score for every basis query equals the normalised mean of its stored
    vectors."""
    import catalog.model_sums

    monkeypatch.setattr(catalog.model_sums, "CACHED_SINGERS", 4)
    names = [f"s{i}" for i in range(7)]
    basis = np.eye(DIM, dtype=np.float32)

    def check(c: Catalog) -> None:
        for domain in ("mono", "mixed"):
            models = reference_singers(c, domain)
            got = np.zeros((len(models), DIM))
            order = sorted(models)
            for j, query in enumerate(basis):
                scores = {h.singer.name: h.score for h in c.search_singers(query, 50, domain)}
                assert sorted(scores) == order
                got[:, j] = [scores[n] for n in order]
            want = np.stack([models[n] for n in order]) if order else got
            np.testing.assert_allclose(got, want, atol=1e-6)

    with Catalog.open(tmp_path, dim=DIM) as a, Catalog.open(tmp_path, dim=DIM) as b:
        hashes: list[str] = []
        for step in range(300):
            c = a if rng.random() < 0.8 else b
            tracks = list(c.iter_tracks())
            op = rng.random()
            if op < 0.45 or not tracks:
                i = 1000 + step
                c.add_track(
                    **item(rng, i, str(rng.choice(names)), str(rng.choice(["mono", "mixed"])))
                )
                hashes.append(f"hash{i}")
            elif op < 0.65:  # the same content embedded again: another vector, maybe singer
                old = tracks[rng.integers(len(tracks))]
                new = item(rng, 0, str(rng.choice(names)), old.domain)
                new |= {
                    "content_hash": old.content_hash,
                    "checkpoint_id": str(rng.choice(["ckpt-a", "ckpt-b"])),
                }
                c.add_tracks([new], replace=True)
            elif op < 0.8:
                moved = tracks[rng.integers(len(tracks))]
                c.update_track(moved.id, singer=str(rng.choice(names)))
            else:
                c.remove_tracks(
                    [t.id for t in rng.choice(tracks, size=min(2, len(tracks)), replace=False)]
                )
            if step % 25 == 0:
                check(c)
        for i in range(6):  # a run of writes by one handle: its sums are used and bounded
            a.add_track(**item(rng, 5000 + i, names[i], "mono"))
        assert len(a._model_sums) == 4
        check(a)
        check(b)


def test_concurrent_writers_and_readers(catalog, rng):
    errors = []

    def writer(w: int):
        try:
            local = np.random.default_rng(w)
            for i in range(10):
                catalog.add_track(**item(local, 1000 * w + i, f"w{w}", "mixed"))
        except Exception as err:
            errors.append(err)

    def reader():
        for _ in range(30):
            catalog.search_singers(unit(np.random.default_rng()), 3, "mixed")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(catalog) == 40
    assert_search_matches_numpy(catalog, unit(rng))


def test_hnsw_catalogue_finds_exact_matches(tmp_path, rng):
    with Catalog.open(tmp_path, dim=DIM, index="hnsw") as c:
        tracks = fill(c, rng, n=40)
        c.remove_tracks([t.id for t in tracks[:12]])
        for t in tracks[12:20]:
            hit = c.search_tracks(c.get_vector(t.id), 1, t.domain)[0]
            assert hit.track.id == t.id and hit.score == pytest.approx(1.0, abs=1e-5)
        assert len(c.search_tracks(unit(rng), 100)) == 28
    assert (tmp_path / "faiss-hnsw.npz").is_file()


def test_stats_and_pagination(catalog, rng):
    fill(catalog, rng, n=10, singers=5)
    stats = catalog.stats()
    assert stats["n_tracks"] == {"mono": 5, "mixed": 5} and stats["n_singers"] == 5
    assert stats["checkpoint_ids"] == {"ckpt-a": 10} and stats["dim"] == DIM
    json.dumps(stats)
    total, first = catalog.list_singers(0, 3)
    _, rest = catalog.list_singers(3, 3)
    assert total == 5 and len(first) == 3 and len(rest) == 2
    assert [s.name for s in first + rest] == [f"singer {i}" for i in range(5)]


def test_export_csv_is_a_manifest_and_json_has_vectors(catalog, rng, tmp_path):
    tracks = fill(catalog, rng, n=6)
    buf = io.StringIO()
    assert catalog.export(buf, "csv") == 6
    (tmp_path / "export.csv").write_text(buf.getvalue())
    rows = read_manifest(tmp_path / "export.csv")
    assert [(r.path, r.singer, r.domain, r.title) for r in rows] == [
        (t.path, t.singer, t.domain, t.title) for t in tracks
    ]
    buf = io.StringIO()
    catalog.export(buf, "json", include_vectors=True)
    data = json.loads(buf.getvalue())
    assert [d["id"] for d in data] == [t.id for t in tracks]
    np.testing.assert_allclose(data[0]["vector"], catalog.get_vector(tracks[0].id), atol=1e-6)


def test_incompatible_catalogues_are_refused(tmp_path, rng):
    with Catalog.open(tmp_path / "a", dim=DIM) as c:
        c.add_track(**item(rng, 1, "a"))
    with pytest.raises(CatalogError, match="dimension"):
        Catalog.open(tmp_path / "a", dim=DIM * 2)
    with Catalog.open(tmp_path / "a", dim=None) as c:  # None: whatever it holds
        assert c.dim == DIM
    db = sqlite3.connect(tmp_path / "a" / CATALOG_FILE)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog.open(tmp_path / "a", dim=DIM)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / CATALOG_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError):
        Catalog.open(tmp_path / "b", dim=DIM)


def test_invalid_tracks_are_refused(catalog, rng):
    with pytest.raises(ValueError, match="shape"):
        catalog.add_track(**{**item(rng, 1, "a"), "vector": np.ones(DIM + 1)})
    with pytest.raises(ValueError, match="finite"):
        catalog.add_track(**{**item(rng, 1, "a"), "vector": np.zeros(DIM)})
    with pytest.raises(ValueError, match="domain"):
        catalog.add_track(**{**item(rng, 1, "a"), "domain": "stereo"})
    with pytest.raises(ValueError, match="singer"):
        catalog.add_track(**{**item(rng, 1, "a"), "singer": "  "})
    assert len(catalog) == 0
