"""The SQLite catalogue's state: its connection, lock, transactions and FAISS indexes.

SQLite is the source of truth; the in-memory FAISS indexes (per domain, one over track
vectors and one over singer models) derive from it. Every write is one SQLite transaction
that also bumps a `generation` counter; the indexes record the generation they reflect. A
process notices another's commits (`PRAGMA data_version`) and rebuilds its indexes before
its next read or write. The reads and writes themselves live in `catalog.sqlite_reads` and
`catalog.sqlite_writes`; `catalog.store.Catalog` puts them together.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from catalog.base import CatalogBackend
from catalog.errors import CatalogError, CatalogRetiredError, TrackNotFoundError
from catalog.faiss_file import (
    SingerIndexes,
    TrackIndexes,
    file_meta,
    index_file,
    read_index_file,
    save_index_file,
)
from catalog.model_sums import ModelSums
from catalog.records import Track
from catalog.sqlite_schema import TRACK_SELECT
from catalog.vector_index import FlatIndex, create_index
from model.domains import DOMAINS
from model.vectors import normalized_mean

log = logging.getLogger("catalog.store")


def singer_model(vectors: np.ndarray) -> np.ndarray:
    """(n, dim) L2-normalised track vectors -> (dim,) float32 L2-normalised mean."""
    return normalized_mean(vectors)


class SqliteCore(CatalogBackend):
    """Connection, lock, transactions and derived indexes of one catalogue directory."""

    def __init__(
        self, directory: Path, db: sqlite3.Connection, dim: int, kind: str, gpu: int | None
    ):
        """Use `Catalog.open`."""
        self.directory = directory
        self.dim = dim
        self.kind = kind
        self._db = db
        self._gpu = gpu
        self._lock = threading.RLock()
        self._generation = -1  # generation the in-memory indexes reflect
        self._saved_generation = -1  # generation of the FAISS file on disk
        self._data_version = self._pragma("data_version")
        # Identifies this catalogue, so a FAISS file left from another one is never loaded.
        self._uuid = self._meta("uuid") or ""
        self._tracks: TrackIndexes = {}
        self._singers: SingerIndexes = {}
        self._model_sums = ModelSums()  # of the generation the in-memory indexes reflect
        self._closed = False

    # -- small helpers -----------------------------------------------------------------
    def _pragma(self, name: str) -> int:
        return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _read_generation(self) -> int:
        return int(self._meta("generation") or 0)

    def _check_open(self) -> None:
        if self._closed:
            raise CatalogError("the catalogue is closed")

    def _check_writable(self) -> None:
        """Inside a write transaction: refuse a generation that a migration has retired."""
        live = self._meta("retired_by")
        if live is not None:
            raise CatalogRetiredError(str(self.directory), live)

    def _unpack(self, blobs: list[bytes]) -> np.ndarray:
        """Stored vectors -> float32 (n, dim)."""
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), self.dim)

    @staticmethod
    def _track(row: tuple) -> Track:
        return Track(*row)

    def _get_track(self, track_id: int) -> Track:
        row = self._db.execute(f"{TRACK_SELECT} WHERE t.id = ?", (int(track_id),)).fetchone()
        if row is None:
            raise TrackNotFoundError(track_id)
        return self._track(row)

    def _vector(self, track_id: int) -> np.ndarray:
        row = self._db.execute(
            "SELECT vector FROM tracks WHERE id = ?", (int(track_id),)
        ).fetchone()
        if row is None:
            raise TrackNotFoundError(track_id)
        return self._unpack([row[0]])[0]

    def _tracks_by_id(self, ids: list[int]) -> list[Track]:
        """Tracks in the order of `ids` (unknown ids are left out)."""
        found: dict[int, Track] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"{TRACK_SELECT} WHERE t.id IN ({marks})", chunk):
                found[row[0]] = self._track(row)
        return [found[i] for i in ids if i in found]

    def _vectors_of(self, singer_id: int, domain: str) -> np.ndarray:
        """A singer's stored track vectors in one domain: float32 (n, dim)."""
        rows = self._db.execute(
            "SELECT vector FROM tracks WHERE singer_id = ? AND domain = ?", (singer_id, domain)
        ).fetchall()
        return self._unpack([r[0] for r in rows])

    def _model_of(self, singer_id: int, domain: str) -> np.ndarray | None:
        vectors = self._vectors_of(singer_id, domain)
        return singer_model(vectors) if len(vectors) else None

    def _track_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DOMAINS, 0)
        counts.update(self._db.execute("SELECT domain, count(*) FROM tracks GROUP BY domain"))
        return counts

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every statement inside sees the same committed state."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def _sync(self) -> None:
        """Reload the in-memory indexes if another process committed a change."""
        version = self._pragma("data_version")
        if version != self._data_version:
            self._data_version = version
            if self._read_generation() != self._generation:
                log.info("the catalogue changed in another process; reloading its indexes")
                self._rebuild()

    # -- the derived indexes -----------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return index_file(self.directory, self.kind)

    def _file_meta(self, generation: int) -> dict:
        return file_meta(self._uuid, self.kind, self.dim, generation)

    def _load_or_rebuild(self) -> None:
        generation = self._read_generation()
        try:
            if self._load_indexes(generation):
                return
        except Exception as err:
            log.warning(
                "%s is unreadable (%s); rebuilding it from the catalogue", self.index_path, err
            )
        self._rebuild()
        try:
            self.save_indexes()
        except OSError as err:  # e.g. a read-only directory: serve from memory anyway
            log.warning("could not save %s: %s", self.index_path, err)

    def _load_indexes(self, generation: int) -> bool:
        path = self.index_path
        if not path.is_file():
            level = logging.INFO if generation else logging.DEBUG
            log.log(level, "%s is missing; building it from the catalogue", path.name)
            return False
        loaded = read_index_file(path, self._file_meta(generation), self._gpu)
        if isinstance(loaded, str):
            log.info("%s: %s; rebuilding it", path.name, loaded)
            return False
        tracks, singers = loaded
        counts = self._track_counts()
        if any(len(tracks[d]) != counts[d] for d in DOMAINS):
            log.warning("%s does not match the catalogue's track counts; rebuilding it", path.name)
            return False
        self._tracks, self._singers = tracks, singers
        self._generation = self._saved_generation = generation
        return True

    def _rebuild(self) -> None:
        """Build every FAISS index from the vectors in SQLite."""
        start = time.perf_counter()
        self._model_sums.clear()
        with self._snapshot():
            generation = self._read_generation()
            tracks = {d: create_index(self.kind, self.dim, self._gpu) for d in DOMAINS}
            cursor = self._db.execute("SELECT id, domain, vector FROM tracks ORDER BY id")
            while rows := cursor.fetchmany(8192):
                for d in DOMAINS:
                    chosen = [r for r in rows if r[1] == d]
                    if chosen:
                        tracks[d].add([r[0] for r in chosen], self._unpack([r[2] for r in chosen]))
            singers = {d: FlatIndex(self.dim) for d in DOMAINS}
            # Rows come grouped by (singer, domain) through the index on those columns.
            cursor = self._db.execute(
                "SELECT singer_id, domain, vector FROM tracks ORDER BY singer_id, domain"
            )
            for (singer_id, domain), group in itertools.groupby(cursor, key=lambda r: r[:2]):
                blobs = [blob for _, _, blob in group]
                singers[domain].add([singer_id], singer_model(self._unpack(blobs)))
        self._tracks, self._singers, self._generation = tracks, singers, generation
        n = sum(len(t) for t in tracks.values())
        log.log(
            logging.INFO if n else logging.DEBUG,
            "built %s indexes of %d tracks in %.1f s",
            self.kind,
            n,
            time.perf_counter() - start,
        )

    def save_indexes(self) -> bool:
        """Write the FAISS file if it is behind the catalogue. Returns whether it wrote."""
        with self._lock:
            self._check_open()
            self._sync()
            if self._saved_generation == self._generation:
                return False
            meta = self._file_meta(self._generation)
            save_index_file(self.index_path, meta, self._tracks, self._singers)
            self._saved_generation = self._generation
            return True

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Save the FAISS file if it is behind, then close. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                self.save_indexes()
            except OSError as err:  # the file is a cache; the next open rebuilds it
                log.warning("could not save %s: %s", self.index_path, err)
            finally:
                self._closed = True
                self._db.close()

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return sum(self._track_counts().values())
