"""Snapshots of an SQLite catalogue taken while another process writes to it
(catalog/snapshot.py): each opens, and holds every write acknowledged before it began."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from catalog import Catalog
from catalog.errors import CatalogError, CatalogRetiredError
from catalog.snapshot import restore, snapshot
from indexer.__main__ import main
from tests.support import REPO
from tests.test_catalog import DIM, assert_search_matches_numpy, item, unit

# Another process adds tracks as fast as it can and prints each one once it is committed.
WRITER = f"""
import sys
import numpy as np
from catalog import Catalog
rng = np.random.default_rng(0)
with Catalog.open(sys.argv[1], dim={DIM}) as c:
    for i in range(100_000):
        v = rng.standard_normal({DIM})
        c.add_track(v, singer=f"s{{i % 7}}", domain=("mono", "mixed")[i % 2], duration_s=5.0,
                    n_segments=1, content_hash=f"h{{i}}", checkpoint_id="ckpt-a")
        print(f"h{{i}}", flush=True)
"""


class Writer:
    """The writing process, and the content hashes it has acknowledged so far."""

    def __init__(self, index):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(index)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.acked: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.acked.append(line.strip())

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.acked) >= n, "the writer is not writing"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(5)


def test_snapshots_during_writes_hold_every_acknowledged_write(tmp_path):
    index = tmp_path / "index"
    Catalog.open(index, dim=DIM).close()
    writer = Writer(index)
    try:
        writer.wait_for(50)
        for k in range(4):
            before = set(writer.acked)  # acknowledged before this snapshot began
            out = tmp_path / f"snap{k}"
            summary = snapshot(index, out)
            with Catalog.open(out, dim=None) as snap:
                held = {t.content_hash for t in snap.iter_tracks()}
                assert before <= held, f"lost: {sorted(before - held)[:5]}"
                assert len(snap) == summary.n_tracks >= len(before)
                assert snap._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                assert_search_matches_numpy(snap, unit(np.random.default_rng(k)))
            time.sleep(0.05)
        assert len(writer.acked) > len(before)  # the writer kept writing throughout
    finally:
        writer.stop()


def test_restore_makes_a_snapshot_live_and_retires_the_current(tmp_path, capsys):
    rng = np.random.default_rng(5)
    index = tmp_path / "index"
    with Catalog.open(index, dim=DIM) as live:
        live.add_tracks([item(rng, i, f"s{i % 3}") for i in range(6)])
        snapshot(index, tmp_path / "snap")
        live.add_tracks([item(rng, 10 + i, "after") for i in range(3)])
        with pytest.raises(CatalogError, match="not empty"):
            snapshot(index, tmp_path / "snap")
        assert main(["restore", "--index", str(index), str(tmp_path / "snap")]) == 0
        assert live.live_generation().startswith("restored-")
        with pytest.raises(CatalogRetiredError):
            live.add_track(**item(rng, 50, "late"))
    with Catalog.open(index, dim=None) as now:
        assert len(now) == 6 and "after" not in {t.singer for t in now.iter_tracks()}
        now.add_track(**item(rng, 60, "writes again"))
    capsys.readouterr()
    assert main(["generations", "--index", str(index)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "(first): retired, 9 tracks, built with ckpt-a"  # its tracks' model
    assert listed[1].startswith("restored-") and listed[1].endswith(
        ": live, 7 tracks, built with ckpt-a"
    )


def test_restore_takes_the_snapshots_faiss_file(tmp_path, caplog):
    """The restored generation opens with the snapshot's FAISS file (an HNSW over a large
    catalogue takes long to rebuild), and answers as the snapshot does."""
    rng = np.random.default_rng(8)
    index = tmp_path / "index"
    with Catalog.open(index, dim=DIM) as live:
        live.add_tracks([item(rng, i, f"s{i % 4}") for i in range(40)])
    snapshot(index, tmp_path / "snap")
    with caplog.at_level(logging.DEBUG, logger="catalog"):
        name = restore(tmp_path / "snap", index)
        with Catalog.open(index, dim=None) as now:
            assert now.generation().name == name and len(now) == 40
            query = unit(rng)
            with Catalog.open(tmp_path / "snap", dim=None) as snap:
                assert [h.track.id for h in now.search_tracks(query, 5)] == [
                    h.track.id for h in snap.search_tracks(query, 5)
                ]
    assert not [r.getMessage() for r in caplog.records if "build" in r.getMessage()]


def test_snapshot_cli(tmp_path, capsys):
    rng = np.random.default_rng(6)
    with Catalog.open(tmp_path / "index", dim=DIM) as c:
        c.add_tracks([item(rng, i, "s") for i in range(3)])
    assert (
        main(["snapshot", "--index", str(tmp_path / "index"), "--out", str(tmp_path / "out")]) == 0
    )
    with Catalog.open(tmp_path / "out", dim=None) as snap:
        assert len(snap) == 3
    assert main(["snapshot", "--catalog", "qdrant+memory://x", "-o", str(tmp_path / "o2")]) == 2
