"""Catalogue archives (catalog/archive.py): export from one backend, import into another,
the same answers; every check refuses before anything is written."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from catalog import Catalog, open_catalog
from catalog.archive import ArchiveError, export_archive, import_archive, verify_archive
from indexer.__main__ import main
from tests.test_catalog import DIM, fill, item, unit


@pytest.fixture
def rng():
    return np.random.default_rng(3)


@pytest.fixture
def source(tmp_path, rng):
    with Catalog.open(tmp_path / "source", dim=DIM) as c:
        fill(c, rng, n=40, singers=6)
        c.remove_tracks([3, 17])
        c.add_roots(["/music"])
        yield c


def answers(catalog, queries) -> list:
    """What a service answers from the catalogue: ranked tracks and singers with scores."""
    out = []
    for q in queries:
        tracks = [
            (h.track.id, h.track.singer, round(h.score, 5)) for h in catalog.search_tracks(q, 10)
        ]
        singers = [
            (h.singer.name, h.n_tracks, round(h.score, 5))
            for d in ("mono", "mixed")
            for h in catalog.search_singers(q, 4, d)
        ]
        out.append((tracks, singers))
    return out


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_sqlite_to_qdrant_and_back_gives_the_same_answers(source, tmp_path, rng, suffix):
    queries = [unit(rng) for _ in range(5)]
    first = tmp_path / f"a{suffix}"
    summary = export_archive(source, first)
    assert summary.n_tracks == 38 and summary.checkpoint_ids == {"ckpt-a": 38}
    with open_catalog(f"qdrant+local://{tmp_path / 'q'}", dim=DIM) as qdrant:
        import_archive(qdrant, first)
        assert answers(qdrant, queries) == answers(source, queries)
        assert qdrant.roots() == ["/music"]
        assert [t.id for t in qdrant.iter_tracks()] == [t.id for t in source.iter_tracks()]
        second = tmp_path / f"b{suffix}"
        export_archive(qdrant, second)
    with Catalog.open(tmp_path / "back", dim=DIM) as back:
        import_archive(back, second)
        import_archive(back, second)  # again: nothing changes (an interrupted import resumes)
        assert answers(back, queries) == answers(source, queries)

        # Everything but singer ids, which Qdrant derives from names (SQLite to SQLite
        # keeps them: test_cli_export_and_import).
        def strip(t):
            return {**vars(t), "singer_id": None}

        assert [strip(t) for t in back.iter_tracks()] == [strip(t) for t in source.iter_tracks()]
        new = back.add_track(**item(rng, 500, "new", "mono"))
        assert new.id > max(t.id for t in source.iter_tracks())


def assert_same_answers(got: list, want: list) -> None:
    """Equal ranked ids and names; scores equal to 1e-5 (float32 arithmetic of two engines)."""
    assert len(got) == len(want)
    for (tracks, singers), (tracks_w, singers_w) in zip(got, want, strict=True):
        assert [t[:2] for t in tracks] == [t[:2] for t in tracks_w]
        assert [s[:2] for s in singers] == [s[:2] for s in singers_w]
        np.testing.assert_allclose(
            [x[2] for x in tracks + singers], [x[2] for x in tracks_w + singers_w], atol=1e-5
        )


def test_sqlite_to_postgres_and_back_gives_the_same_answers(source, tmp_path, rng, postgres_dsn):
    """The same round trip through a real PostgreSQL server (catalog/postgres.py)."""
    queries = [unit(rng) for _ in range(5)]
    export_archive(source, tmp_path / "a.tar")
    with open_catalog(postgres_dsn, dim=DIM) as pg:
        import_archive(pg, tmp_path / "a.tar")
        assert_same_answers(answers(pg, queries), answers(source, queries))
        assert pg.roots() == ["/music"]
        assert [t.id for t in pg.iter_tracks()] == [t.id for t in source.iter_tracks()]
        export_archive(pg, tmp_path / "b.tar")
    with Catalog.open(tmp_path / "back", dim=DIM) as back:
        import_archive(back, tmp_path / "b.tar")
        assert_same_answers(answers(back, queries), answers(source, queries))
        keep = ("id", "singer", "domain", "path", "title", "content_hash", "checkpoint_id")
        assert [{k: getattr(t, k) for k in keep} for t in back.iter_tracks()] == [
            {k: getattr(t, k) for k in keep} for t in source.iter_tracks()
        ]


def rewrite(path, out, **changes):
    """A copy of archive `path` with members replaced (name -> bytes)."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members.update(changes)
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_damaged_or_unfit_archives_are_refused_before_any_write(source, tmp_path, rng):
    good = tmp_path / "good.tar"
    export_archive(source, good)
    with tarfile.open(good) as tar:
        vectors = bytearray(tar.extractfile("vectors.f32").read())
        manifest = json.loads(tar.extractfile("catalogue.json").read())
    vectors[100] ^= 0xFF
    flipped = rewrite(good, tmp_path / "flipped.tar", **{"vectors.f32": bytes(vectors)})
    with pytest.raises(ArchiveError, match="checksum"):
        verify_archive(flipped)
    foreign = rewrite(
        good,
        tmp_path / "foreign.tar",
        **{"catalogue.json": json.dumps({**manifest, "checkpoint_ids": {"other": 38}}).encode()},
    )
    (tmp_path / "notes.tar").write_bytes(b"not a tar file at all")
    with Catalog.open(tmp_path / "t", dim=DIM) as target:
        for bad, match in (
            (flipped, "checksum"),
            (foreign, "does not declare"),
            (tmp_path / "notes.tar", "not a catalogue"),
        ):
            with pytest.raises(ArchiveError, match=match):
                import_archive(target, bad)
            assert len(target) == 0
    with (
        Catalog.open(tmp_path / "wide", dim=DIM * 2) as wide,
        pytest.raises(ArchiveError, match="dimension"),
    ):
        import_archive(wide, good)
    with Catalog.open(tmp_path / "b", dim=DIM) as other:
        other.add_track(**{**item(rng, 900, "x"), "checkpoint_id": "ckpt-b"})
        with pytest.raises(ArchiveError, match="ckpt-b"):
            import_archive(other, good)
        assert len(other) == 1


def test_cli_export_and_import(source, tmp_path, capsys):
    archive = tmp_path / "cat.tgz"
    source.close()
    assert main(["export", "--index", str(tmp_path / "source"), "-o", str(archive)]) == 0
    assert main(["import", "--index", str(tmp_path / "copy"), str(archive)]) == 0
    with (
        Catalog.open(tmp_path / "copy", dim=None) as copy,
        Catalog.open(tmp_path / "source", dim=None) as orig,
    ):
        assert copy.dim == DIM and list(copy.iter_tracks()) == list(orig.iter_tracks())


def strip_ids(answer: dict) -> dict:
    """An answer without what one backend assigns differently: singer ids (Qdrant derives
    them from names) and the time spent."""
    out = {k: v for k, v in answer.items() if k not in ("elapsed_s",)}
    for hit in out.get("singers", []):
        hit.pop("id", None)
    for hit in out.get("tracks", []):
        hit.pop("singer_id", None)
    return out


def rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


@pytest.mark.e2e
def test_identify_answers_the_same_after_moving_to_qdrant(tmp_path, random_checkpoint):
    """SQLite catalogue -> archive -> Qdrant: two real services, the same uploads, the same
    /identify and /search answers."""
    from service.settings import Settings
    from tests.support.live import API_KEY, LiveServer, make_clip, upload

    library = tmp_path / "music"
    for v in range(3):
        for seed in (0, 1):
            make_clip(library / f"singer-{v}", v, "mixed", seed)
    index = tmp_path / "index"
    assert main(["--index", str(index), "--checkpoint", str(random_checkpoint), str(library)]) == 0
    archive = tmp_path / "catalogue.tar"
    assert main(["export", "--index", str(index), "-o", str(archive)]) == 0
    url = f"qdrant+local://{tmp_path / 'qdrant'}?collection=moved"
    assert main(["import", "--catalog", url, str(archive)]) == 0
    queries = [make_clip(tmp_path / "q", v, "mixed", 9).path for v in range(3)]
    answers = []
    for where in ({"index_dir": index}, {"index_dir": tmp_path / "other", "catalog": url}):
        settings = Settings(checkpoint=random_checkpoint, device="cpu", api_key=API_KEY, **where)
        with LiveServer(settings) as server, server.client() as client:
            got = []
            for q in queries:
                for endpoint in ("/identify", "/search"):
                    r = upload(client, endpoint, q, domain="mixed")
                    assert r.status_code == 200, r.text
                    got.append(rounded(strip_ids(r.json())))
            answers.append(got)
    assert answers[0] == answers[1]
    assert answers[0][0]["singers"][0]["name"] == "singer-0"
