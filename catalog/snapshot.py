"""Snapshots of an SQLite catalogue directory, taken while services read and write it.

    snapshot(index_dir, out)   out/catalog.sqlite: SQLite's online backup API copies the live
                               generation in one read transaction, i.e. exactly the writes
                               committed before it began (WAL: writers are not stopped);
                               out/faiss-*.npz: copied whole, then replaced by rename
    restore(snapshot, index_dir)   the snapshot becomes a new generation of index_dir and
                               is switched live (services follow it without a restart)

A snapshot folder is itself a catalogue directory (`--index SNAPSHOT` or SINGER_INDEX_DIR).
A FAISS file is a cache of the SQLite file: when the copy is of another generation than
the SQLite copy (a write between the two), the snapshot's first open rebuilds it; `snapshot`
opens the copy once to check it, so the snapshot on disk is ready to serve.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from catalog.errors import CatalogError
from catalog.sqlite_generations import generation_dir, read_live
from catalog.sqlite_schema import CATALOG_FILE
from catalog.store import Catalog


@dataclass(frozen=True)
class SnapshotSummary:
    path: Path
    n_tracks: int
    generation: int  # the catalogue's write counter at the snapshot
    seconds: float


def _backup(source: Path, target: Path) -> None:
    """Copy an SQLite file with the online backup API, in one step (one read transaction)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60.0)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # pages=-1: every page in one step, a consistent state
    finally:
        dst.close()
        src.close()


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy a file that may be replaced meanwhile (we read the inode we opened), then
    rename into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with source.open("rb") as fin, tmp.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, target)


def snapshot(index_dir: str | Path, out: str | Path) -> SnapshotSummary:
    """A consistent copy of the live generation of `index_dir` into new folder `out`."""
    start = time.perf_counter()
    home, out = Path(index_dir), Path(out)
    source = generation_dir(home, read_live(home))
    if not (source / CATALOG_FILE).is_file():
        raise CatalogError(f"no catalogue in {home}")
    if out.exists() and any(out.iterdir()):
        raise CatalogError(f"{out} exists and is not empty")
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _backup(source / CATALOG_FILE, partial / CATALOG_FILE)
    for faiss_file in sorted(source.glob("faiss-*.npz")):
        try:
            _copy_atomic(faiss_file, partial / faiss_file.name)
        except FileNotFoundError:  # removed meanwhile: the snapshot rebuilds it
            continue
    with Catalog.open(partial, dim=None) as copy:  # checks it, rebuilds a stale FAISS file
        n, generation = len(copy), copy.stats()["generation"]
    if out.exists():
        out.rmdir()
    os.replace(partial, out)
    return SnapshotSummary(out, n, generation, time.perf_counter() - start)


def restore(snapshot_dir: str | Path, index_dir: str | Path, name: str | None = None) -> str:
    """Make snapshot `snapshot_dir` the live generation of `index_dir` (a copy of it, in a
    new generation; the generation it replaces is retired and kept). Returns its name."""
    snap, home = Path(snapshot_dir), Path(index_dir)
    if not (snap / CATALOG_FILE).is_file():
        raise CatalogError(f"no catalogue in {snap}")
    name = name or time.strftime("restored-%Y%m%dT%H%M%S", time.gmtime())
    target = generation_dir(home, name)
    if (target / CATALOG_FILE).exists():
        raise CatalogError(f"generation {name} exists in {home}")
    target.mkdir(parents=True)
    _backup(snap / CATALOG_FILE, target / CATALOG_FILE)
    for faiss_file in sorted(snap.glob("faiss-*.npz")):  # a large HNSW takes long to rebuild
        _copy_atomic(faiss_file, target / faiss_file.name)  # checked on open, rebuilt if stale
    with Catalog.open(home, dim=None) as live, Catalog.open(home, generation=name, dim=None) as new:
        # A snapshot of a once-retired generation must take writes again.
        new._db.execute("DELETE FROM meta WHERE key = 'retired_by'")
        if not live.switch_to(new, lambda: True):
            raise CatalogError("the restore could not switch")
    return name
