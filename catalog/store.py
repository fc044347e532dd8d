"""The catalogue: tracks, their singer vectors and singers, in one index directory.

    <directory>/catalog.sqlite     the source of truth (WAL mode): schema version, tracks with
                                   their metadata and float32 vector, singers, indexed roots
                                   (catalog/sqlite_schema.py)
    <directory>/faiss-<kind>.npz   FAISS indexes derived from it: per domain, one over track
                                   vectors and one over singer models (catalog/faiss_file.py)

A singer model is the L2-normalised mean of that singer's (L2-normalised) track vectors in
one domain, as in the paper; it is brought up to date whenever one of the singer's tracks is
added, changed or removed, from a running sum of the vectors (`catalog.model_sums`) or, when
this process has none, from the stored vectors. Every write is one SQLite transaction that also
bumps a `generation` counter. The FAISS file records the catalogue (a random id) and the
generation it was built from; when it is missing, unreadable, from another catalogue or from
another generation it is rebuilt from SQLite, so a process killed at any point leaves a
catalogue that opens with indexes that match it. The FAISS file is written on
`save_indexes()` / `close()`, atomically (temporary file + rename).

Several processes may open one directory (e.g. the indexer while the service runs): SQLite
serialises their writes, and a process notices another's commits (`PRAGMA data_version`)
and reloads its in-memory indexes before its next read or write.

The class is assembled from one module per job: `catalog.sqlite_core` (connection, lock,
transactions, FAISS indexes), `catalog.sqlite_reads`, `catalog.sqlite_writes`, and
`catalog.sqlite_generations` (indexed roots; the generations a migration switches between).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from catalog.errors import CatalogError, DuplicateTrackError, TrackNotFoundError
from catalog.sqlite_core import singer_model
from catalog.sqlite_generations import (
    SqliteGenerations,
    check_name,
    generation_dir,
    read_live,
    write_live,
)
from catalog.sqlite_reads import SqliteReads
from catalog.sqlite_schema import (
    CATALOG_FILE,
    DEFAULT_DIM,
    SCHEMA_VERSION,
    connect,
    prepare_schema,
)
from catalog.sqlite_writes import SqliteWrites
from catalog.vector_index import KINDS, resolve_gpu

__all__ = [
    "CATALOG_FILE",
    "DEFAULT_DIM",
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogError",
    "DuplicateTrackError",
    "TrackNotFoundError",
    "singer_model",
]


class Catalog(SqliteGenerations, SqliteWrites, SqliteReads):
    """Tracks, singers and their FAISS indexes in one directory. Thread-safe (one lock)."""

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        dim: int | None = DEFAULT_DIM,
        index: str = "flat",
        device: str = "auto",
        generation: str | None = None,
    ) -> Catalog:
        """Open (creating if absent) the catalogue in index directory `directory`.

        `dim`: the vector dimension; None: whatever the catalogue holds (DEFAULT_DIM if new).
        `index`: 'flat' (exact) or 'hnsw' (approximate) search over track vectors; singer
        models are always searched exactly. `device`: 'auto' | 'cpu' | 'cuda[:N]' for FAISS.
        `generation`: which generation (catalog/sqlite_generations.py); None: the live one.
        Raises CatalogError for a catalogue of another dimension, a newer schema, or a file
        that is not a catalogue.
        """
        if index not in KINDS:
            raise ValueError(f"index must be one of {KINDS}, got {index!r}")
        home = Path(directory)
        name = read_live(home) if generation is None else check_name(generation)
        catalog = cls._open_generation(home, name, dim, index, device)
        if generation is None:
            successor = catalog._meta("retired_by")
            if successor is not None and (generation_dir(home, successor) / CATALOG_FILE).is_file():
                # A switch that crashed before LIVE was replaced: finish it.
                catalog.close()
                write_live(home, successor)
                catalog = cls._open_generation(home, successor, dim, index, device)
        return catalog

    @classmethod
    def _open_generation(
        cls, home: Path, name: str, dim: int | None, index: str, device: str
    ) -> Catalog:
        directory = generation_dir(home, name)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            db = connect(directory / CATALOG_FILE)
            dim = prepare_schema(db, dim, directory)
        except sqlite3.DatabaseError as err:
            raise CatalogError(
                f"{directory / CATALOG_FILE}: not a usable catalogue: {err}"
            ) from err
        catalog = cls(directory, db, dim, index, resolve_gpu(device))
        catalog.home, catalog.generation_name = home, name
        with catalog._lock:
            catalog._load_or_rebuild()
        return catalog
