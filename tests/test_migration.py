"""`python -m indexer migrate` (indexer/migration.py): a catalogue built by checkpoint A is
re-embedded by checkpoint B into a new generation and switched, keeping ids, singers and
metadata; missing audio is reported and kept or dropped; a kill -9 resumes to the same result.
The switch under a serving service is tested in tests/test_migration_live.py."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from catalog.hashing import content_hash
from catalog.sqlite_generations import generation_dir, read_live
from catalog.sqlite_schema import CATALOG_FILE
from catalog.store import Catalog
from indexer.__main__ import main
from indexer.migration import shadow_name
from model.checkpoint import checkpoint_id, make_random_checkpoint
from model.embedding import Embedder
from tests.support import REPO
from tests.support.synth import VOICES, backing, sing, write

SECONDS = 7.0


def clip(voice: int, take: int) -> np.ndarray:
    return 0.7 * sing(VOICES[voice], SECONDS, seed=take) + 0.3 * backing(SECONDS, seed=take)


def make_library(root: Path, n: int) -> Path:
    for i in range(n):
        write(root / f"voice {i % 3}" / f"take{i:02d}.wav", clip(i % 3, i))
    return root


@pytest.fixture(scope="module")
def checkpoint_b(tmp_path_factory) -> Path:
    return make_random_checkpoint(tmp_path_factory.mktemp("b") / "b.pt", seed=1)


@pytest.fixture(scope="module")
def embedder_b(checkpoint_b) -> Embedder:
    return Embedder.from_checkpoint(checkpoint_b, device="cpu")


def build(index: Path, library: Path, checkpoint: Path, upload: Path | None = None) -> None:
    """Index `library` with `checkpoint`; `upload`: also a track as POST /tracks adds one
    (no path, its audio kept in the upload store under its content hash)."""
    assert main(["--index", str(index), "--checkpoint", str(checkpoint), str(library)]) == 0
    if upload is not None:
        emb = Embedder.from_checkpoint(checkpoint, device="cpu").embed_file(upload, "mixed")
        digest = content_hash(upload)
        (index / "audio").mkdir(exist_ok=True)
        shutil.copy(upload, index / "audio" / f"{digest}.wav")
        with Catalog.open(index, dim=None) as c:
            c.add_track(
                emb.vector,
                singer="uploader",
                domain="mixed",
                duration_s=emb.duration_s,
                n_segments=emb.n_segments,
                content_hash=digest,
                checkpoint_id=checkpoint_id(checkpoint),
                title="an upload",
                external_id="up-1",
            )


def snapshot_of(index: Path) -> tuple[list, dict[int, np.ndarray]]:
    with Catalog.open(index, dim=None) as c:
        tracks = list(c.iter_tracks())
        return tracks, {t.id: c.get_vector(t.id) for t in tracks}


def comparable(track) -> tuple:
    """What a migration keeps of a track (all but the vector's checkpoint and segments)."""
    return (track.id, track.singer, track.domain, track.path, track.title, track.external_id,
            track.content_hash, track.created_at)  # fmt: skip


def test_migrate_keeps_ids_and_metadata_and_re_embeds_with_b(
    tmp_path, random_checkpoint, checkpoint_b, embedder_b, capsys
):
    library = make_library(tmp_path / "music", 6)
    upload = write(tmp_path / "upload.wav", clip(1, 40))
    index = tmp_path / "index"
    build(index, library, random_checkpoint, upload)
    before, _ = snapshot_of(index)
    assert main(["migrate", "--index", str(index), "--to", str(checkpoint_b)]) == 0
    assert "switched" in capsys.readouterr().err
    name = shadow_name(checkpoint_id(checkpoint_b), "")
    assert read_live(index) == name
    after, vectors = snapshot_of(index)
    assert [comparable(t) for t in after] == [comparable(t) for t in before]
    assert {t.checkpoint_id for t in after} == {checkpoint_id(checkpoint_b)}
    for t in after:
        source = t.path or upload
        ref = embedder_b.embed_file(source, t.domain)
        np.testing.assert_allclose(vectors[t.id], ref.vector, atol=1e-5)
        assert t.n_segments == ref.n_segments
    with Catalog.open(index, dim=None) as c:
        info = c.generation()
        assert info.checkpoint_id == checkpoint_id(checkpoint_b)
        assert info.checkpoint_file == str(checkpoint_b.resolve())
        assert c.roots() == [str(library.resolve())]
        assert {s.name for s in c.list_singers()[1]} == {
            "voice 0",
            "voice 1",
            "voice 2",
            "uploader",
        }
    with Catalog.open(index, generation="", dim=None) as old:
        assert old.generation().retired and len(old) == len(before)
    # Nothing left to do: a second run says so and changes nothing.
    assert main(["migrate", "--index", str(index), "--to", str(checkpoint_b)]) == 0
    assert "already" in capsys.readouterr().err


def test_missing_audio_is_reported_then_kept_or_dropped(
    tmp_path, random_checkpoint, checkpoint_b, capsys
):
    library = make_library(tmp_path / "music", 4)
    index = tmp_path / "index"
    build(index, library, random_checkpoint)
    gone = library / "voice 1" / "take01.wav"
    gone.unlink()
    args = ["migrate", "--index", str(index), "--to", str(checkpoint_b)]
    assert main(args) == 1
    report = capsys.readouterr().err
    assert "NOT switched" in report and f"{gone} is gone" in report
    assert read_live(index) == ""  # the old catalogue still serves, every track kept
    write(gone, clip(1, 1))  # the file is back: the run resumes and switches
    assert main(args) == 0
    tracks, _ = snapshot_of(index)
    assert len(tracks) == 4
    (library / "voice 2" / "take02.wav").unlink()
    other = make_random_checkpoint(tmp_path / "c.pt", seed=2)
    assert main(["migrate", "--index", str(index), "--to", str(other), "--missing", "drop"]) == 0
    tracks, _ = snapshot_of(index)
    assert len(tracks) == 3 and "take02" not in {t.title for t in tracks}
    assert {t.checkpoint_id for t in tracks} == {checkpoint_id(other)}


def count(db_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute(
                "SELECT count(*) FROM tracks WHERE checkpoint_id = ?",
                (os.environ["_B_ID"],),
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_mid_migration_resumes_to_the_uninterrupted_result(
    tmp_path, random_checkpoint, checkpoint_b, monkeypatch
):
    n = 24
    library = make_library(tmp_path / "music", n)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    build(killed, library, random_checkpoint)
    shutil.copytree(killed, clean)
    args = ["--to", str(checkpoint_b), "--workers", "1", "--batch-size", "2"]
    args += ["--commit-every", "1", "--no-progress"]
    assert main(["migrate", "--index", str(clean), *args]) == 0
    shadow_db = generation_dir(killed, shadow_name(checkpoint_id(checkpoint_b), "")) / CATALOG_FILE
    monkeypatch.setenv("_B_ID", checkpoint_id(checkpoint_b))
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", "migrate", "--index", str(killed), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 180
        while count(shadow_db) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the migration ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 3 <= count(shadow_db) < n and read_live(killed) == ""
    assert main(["migrate", "--index", str(killed), *args]) == 0
    got, got_vectors = snapshot_of(killed)
    want, want_vectors = snapshot_of(clean)
    assert [comparable(t) for t in got] == [comparable(t) for t in want]
    assert [t.n_segments for t in got] == [t.n_segments for t in want]
    for t in want:
        np.testing.assert_allclose(got_vectors[t.id], want_vectors[t.id], atol=1e-5)


def test_migrate_a_qdrant_catalogue(tmp_path, random_checkpoint, checkpoint_b, embedder_b):
    pytest.importorskip("qdrant_client")
    from catalog import open_catalog

    library = make_library(tmp_path / "music", 4)
    url = f"qdrant+local://{tmp_path / 'qdrant'}?collection=songs"
    index = ["--catalog", url, "--checkpoint", str(random_checkpoint), str(library)]
    assert main(index) == 0
    with open_catalog(url, dim=None) as c:
        before = list(c.iter_tracks())
    assert main(["migrate", "--catalog", url, "--to", str(checkpoint_b)]) == 0
    with open_catalog(url, dim=None) as c:
        after = list(c.iter_tracks())
        assert c.generation().name == shadow_name(checkpoint_id(checkpoint_b), "")
        assert [comparable(t) for t in after] == [comparable(t) for t in before]
        for t in after:
            ref = embedder_b.embed_file(t.path, t.domain)
            np.testing.assert_allclose(c.get_vector(t.id), ref.vector, atol=1e-5)
        assert c.roots() == [str(library.resolve())]
