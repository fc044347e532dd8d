"""`python -m indexer` end to end: generated audio, a random-weight checkpoint, real catalogues.

The CLI runs in-process (`indexer.__main__.main`) except for the crash test, which kills a
real subprocess with SIGKILL in the middle of a run.
"""

from __future__ import annotations

import csv
import json
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
import torch

from catalog.hashing import content_hash
from catalog.store import CATALOG_FILE, Catalog
from indexer.__main__ import main
from indexer.run import auto_processes, index_source
from model.checkpoint import checkpoint_id, make_random_checkpoint
from model.embedding import Embedder
from tests.support import REPO
from tests.support.synth import VOICES, backing, sing, write

SECONDS = 7.0  # two 3-second segments


def mixed_clip(voice: int, take: int) -> np.ndarray:
    return 0.7 * sing(VOICES[voice], SECONDS, seed=take) + backing(SECONDS, seed=take)


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    """<singer>/<take>.wav for 3 voices x 2 takes, plus files that must be skipped."""
    root = tmp_path_factory.mktemp("music")
    for v in range(3):
        for take in range(2):
            write(root / f"voice {v}" / f"take{take}.wav", mixed_clip(v, take))
    write(root / "voice 0" / "too-short.wav", sing(VOICES[0], 1.5))
    (root / "voice 1" / "broken.flac").write_bytes(b"fLaC but not really" * 50)
    (root / "voice 1" / "notes.txt").write_text("not audio, ignored")
    write(root / "no-singer.wav", sing(VOICES[2], 4.0))
    return root


GOOD = 6
BAD = {"too-short.wav": "at least", "broken.flac": "decodable", "no-singer.wav": "no singer"}


@pytest.fixture(scope="module")
def embedder(random_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(random_checkpoint, device="cpu")


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def tracks_of(index: Path) -> list:
    with Catalog.open(index, dim=None) as c:
        return list(c.iter_tracks())


@pytest.mark.parametrize("processes", ["auto", "2"])  # auto on CPU: threads
def test_folder_source_indexes_good_files_and_reports_bad_ones(
    music, random_checkpoint, embedder, tmp_path, capsys, processes
):
    index = tmp_path / "index"
    ckpt = random_checkpoint
    assert run_cli("--index", index, "--checkpoint", ckpt, "--processes", processes, music) == 1
    summary = capsys.readouterr().err
    for name, reason in BAD.items():
        line = next(ln for ln in summary.splitlines() if name in ln)
        assert reason in line, line
    tracks = tracks_of(index)
    assert len(tracks) == GOOD
    assert {(t.singer, t.title, t.domain) for t in tracks} == {
        (f"voice {v}", f"take{k}", "mixed") for v in range(3) for k in range(2)
    }
    # Each stored vector equals the library's single-file embedding of that file.
    with Catalog.open(index, dim=None) as c:
        for t in tracks:
            ref = embedder.embed_file(t.path, "mixed")
            np.testing.assert_allclose(c.get_vector(t.id), ref.vector, atol=1e-5)
            assert t.n_segments == ref.n_segments >= 1
            assert t.content_hash == content_hash(t.path)
            assert t.checkpoint_id == checkpoint_id(random_checkpoint)

    # A second run embeds nothing: everything is already indexed (the bad files fail again).
    assert run_cli("--index", index, "--checkpoint", random_checkpoint, music) == 1
    assert "0 indexed, 6 already indexed" in capsys.readouterr().err
    assert [t.id for t in tracks_of(index)] == [t.id for t in tracks]


def test_clean_source_exits_zero_and_rebuild_re_embeds(music, random_checkpoint, tmp_path, capsys):
    clean = tmp_path / "clean"
    shutil.copytree(music / "voice 2", clean / "voice 2")
    index = tmp_path / "index"
    assert run_cli("--index", index, "--checkpoint", random_checkpoint, clean) == 0
    before = tracks_of(index)
    assert run_cli("--index", index, "--checkpoint", random_checkpoint, "--rebuild", clean) == 0
    assert "2 indexed, 0 already indexed" in capsys.readouterr().err
    assert [t.id for t in tracks_of(index)] == [t.id for t in before]
    # The folder is recorded once as a root the service may play files from.
    with Catalog.open(index, dim=None) as c:
        assert c.roots() == [str(clean.resolve())]


def test_a_new_checkpoint_replaces_old_vectors_without_duplicates(
    music, random_checkpoint, tmp_path
):
    clean = tmp_path / "clean"
    shutil.copytree(music / "voice 0", clean / "voice 0", ignore=shutil.ignore_patterns("too*"))
    index = tmp_path / "index"
    other = make_random_checkpoint(tmp_path / "other.pt", seed=1)
    assert run_cli("--index", index, "--checkpoint", random_checkpoint, clean) == 0
    first = tracks_of(index)
    assert run_cli("--index", index, "--checkpoint", other, clean) == 0
    again = tracks_of(index)
    assert [t.id for t in again] == [t.id for t in first]
    assert {t.checkpoint_id for t in again} == {checkpoint_id(other)}


def test_manifest_source(music, random_checkpoint, tmp_path):
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    mono = write(tmp_path / "lists" / "vocals.wav", sing(VOICES[1], SECONDS, seed=9))
    rows = [
        {
            "path": str(music / "voice 0" / "take0.wav"),
            "singer": "Alice",
            "title": "Song A",
            "domain": "",
            "external_id": "ext-1",
        },
        {
            "path": "vocals.wav",
            "singer": "Bob",
            "title": "",
            "domain": "mono",
            "external_id": "",
        },  # relative to the manifest's folder
        {"path": "missing.wav", "singer": "Bob", "title": "", "domain": "", "external_id": ""},
    ]
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "singer", "title", "domain", "external_id"])
        writer.writeheader()
        writer.writerows(rows)
    index = tmp_path / "index"
    assert run_cli("--index", index, "--checkpoint", random_checkpoint, manifest) == 1
    tracks = {t.singer: t for t in tracks_of(index)}
    assert set(tracks) == {"Alice", "Bob"}
    alice, bob = tracks["Alice"], tracks["Bob"]
    assert (alice.domain, alice.title, alice.external_id) == ("mixed", "Song A", "ext-1")
    assert (bob.domain, bob.title, bob.path) == ("mono", "vocals", str(mono))

    # Metadata edited in the manifest is applied on the next run without re-embedding.
    rows[0]["singer"] = "Alice Cooper"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "singer", "title", "domain", "external_id"])
        writer.writeheader()
        writer.writerows(rows[:2])
    assert run_cli("--index", index, "--checkpoint", random_checkpoint, manifest) == 0
    after = {t.id: t for t in tracks_of(index)}
    assert (
        after[alice.id].singer == "Alice Cooper" and after[alice.id].created_at == alice.created_at
    )
    with Catalog.open(index, dim=None) as c:
        assert [s.name for s in c.list_singers()[1]] == ["Alice Cooper", "Bob"]


def test_duplicate_files_in_a_source_are_indexed_once(music, embedder, tmp_path):
    src = tmp_path / "src"
    write(src / "a" / "one.wav", mixed_clip(0, 0))
    shutil.copy(src / "a" / "one.wav", src / "a" / "copy.wav")
    with Catalog.open(tmp_path / "index", dim=embedder.embed_dim) as catalog:
        report = index_source(catalog, embedder, src)
        assert report.ok and report.n_added == 1 and len(report.duplicates) == 1
        assert len(catalog) == 1


def test_stats_remove_and_export(music, random_checkpoint, tmp_path, capsys):
    index = tmp_path / "index"
    run_cli("--index", index, "--checkpoint", random_checkpoint, music)
    capsys.readouterr()
    assert run_cli("stats", "--index", index, "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_tracks"] == {"mono": 0, "mixed": GOOD} and stats["n_singers"] == 3

    assert run_cli("export", "--index", index, "-o", tmp_path / "all.json", "--vectors") == 0
    exported = json.loads((tmp_path / "all.json").read_text())
    assert len(exported) == GOOD and len(exported[0]["vector"]) == 256

    gone = next(e for e in exported if e["singer"] != "voice 2")
    first = gone["id"]
    assert run_cli("remove", "--index", index, first) == 0
    assert run_cli("remove", "--index", index, "--singer", "voice 2") == 0
    assert run_cli("remove", "--index", index, first) == 1  # gone already
    assert len(tracks_of(index)) == GOOD - 3
    assert f"removed track {first}: {gone['singer']} / {gone['title']}" in capsys.readouterr().out
    assert run_cli("export", "--index", index, "--format", "csv") == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + GOOD - 3


def test_unusable_checkpoint_or_source_exit_2(music, tmp_path, caplog):
    assert run_cli("--index", tmp_path / "i", "--checkpoint", tmp_path / "nope.pt", music) == 2
    assert "checkpoint not found" in caplog.text
    assert run_cli("--index", tmp_path / "i", tmp_path / "no-such-folder") == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("file,who\nx.wav,me\n")
    ckpt = make_random_checkpoint(tmp_path / "c.pt")
    assert run_cli("--index", tmp_path / "i", "--checkpoint", ckpt, bad) == 2


def test_sigkill_mid_run_then_resume_without_duplicates(random_checkpoint, tmp_path):
    n_files = 30
    src = tmp_path / "src"
    for i in range(n_files):
        write(src / f"voice {i % 3}" / f"take{i:02d}.wav", mixed_clip(i % 3, i))
    index = tmp_path / "index"
    cmd = [
        sys.executable,
        "-m",
        "indexer",
        "--index",
        str(index),
        "--checkpoint",
        str(random_checkpoint),
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--commit-every",
        "1",
        "--no-progress",
        str(src),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    committed = 0
    try:
        deadline = time.monotonic() + 120
        while committed < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            committed = _count_tracks(index / CATALOG_FILE)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with Catalog.open(index, dim=None) as c:  # opens; FAISS rebuilt from what was committed
        assert c._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = list(c.iter_tracks())
        assert 3 <= len(kept) < n_files
        probe = c.get_vector(kept[0].id)
        hits = c.search_tracks(probe, n_files)
        assert sorted(h.track.id for h in hits) == sorted(t.id for t in kept)

    assert main(cmd[3:]) == 0  # the same command again, in-process
    with Catalog.open(index, dim=None) as c:
        tracks = list(c.iter_tracks())
        assert len(tracks) == n_files
        assert len({t.content_hash for t in tracks}) == n_files
        assert [t.id for t in tracks[: len(kept)]] == [t.id for t in kept]
        assert len(c.search_tracks(probe, 100)) == n_files


def _count_tracks(db_path: Path) -> int:
    if not db_path.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM tracks").fetchone()[0]
    except sqlite3.Error:  # the schema is being created
        return 0


def test_processes_option_auto_and_refused(music, random_checkpoint, tmp_path):
    assert auto_processes(torch.device("cpu")) == 0  # on the CPU the model needs the cores
    assert auto_processes(torch.device("cuda")) == max(2, (os.cpu_count() or 2) - 2)
    with pytest.raises(SystemExit):
        run_cli(
            "--index", tmp_path / "i", "--checkpoint", random_checkpoint, "--processes", "-1", music
        )
