"""The catalogue: tracks, their singer vectors and singers, in one index directory.

    <directory>/catalog.sqlite     the source of truth (WAL mode): schema version, tracks with
                                   their metadata and float32 vector, singers
    <directory>/faiss-<kind>.npz   FAISS indexes derived from it: per domain, one over track
                                   vectors and one over singer models

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
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from catalog.base import (
    METADATA_FIELDS,
    CatalogBackend,
    TrackFilter,
    check_domain,
    validated_item,
)
from catalog.errors import CatalogError, DuplicateTrackError, TrackNotFoundError
from catalog.model_sums import ModelSums, model_of_sum, shifted
from catalog.records import Singer, SingerHit, Track, TrackHit
from catalog.vector_index import (
    KINDS,
    FlatIndex,
    VectorIndex,
    create_index,
    load_index,
    resolve_gpu,
)
from model.domains import DOMAINS
from model.files import atomic_write
from model.vectors import normalized_mean

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_DIM = 256
INDEX_FORMAT = 1
CATALOG_FILE = "catalog.sqlite"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE singers (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE tracks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after a delete
    singer_id     INTEGER NOT NULL REFERENCES singers(id),
    domain        TEXT NOT NULL CHECK (domain IN ('mono', 'mixed')),
    path          TEXT,
    title         TEXT,
    external_id   TEXT,
    duration_s    REAL NOT NULL,
    n_segments    INTEGER NOT NULL,
    content_hash  TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    vector        BLOB NOT NULL,                      -- float32 little-endian, L2-normalised
    UNIQUE (content_hash, checkpoint_id, domain)
);
CREATE INDEX tracks_by_singer ON tracks (singer_id, domain);
CREATE INDEX tracks_by_content ON tracks (content_hash, domain);
CREATE INDEX tracks_by_checkpoint ON tracks (checkpoint_id);
"""

_TRACK_SELECT = (
    "SELECT t.id, s.name, t.singer_id, t.domain, t.path, t.title, t.external_id, t.duration_s,"
    " t.n_segments, t.content_hash, t.checkpoint_id, t.created_at"
    " FROM tracks t JOIN singers s ON s.id = t.singer_id"
)


def singer_model(vectors: np.ndarray) -> np.ndarray:
    """(n, dim) L2-normalised track vectors -> (dim,) float32 L2-normalised mean."""
    return normalized_mean(vectors)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _Delta:
    """What one committed transaction changes in the in-memory indexes."""

    upserts: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # domain -> id -> vec
    stale: dict[str, set[int]] = field(default_factory=dict)  # domain -> ids that existed before
    # (singer id, domain) touched -> the vectors that joined (+1) or left (-1) its tracks
    moves: dict[tuple[int, str], list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    models: dict[tuple[int, str], np.ndarray | None] = field(default_factory=dict)  # None: gone
    sums: dict[tuple[int, str], tuple[np.ndarray, int]] = field(default_factory=dict)

    def upsert(self, domain: str, track_id: int, vector: np.ndarray, existed: bool) -> None:
        self.upserts.setdefault(domain, {})[track_id] = vector
        if existed:
            self.stale.setdefault(domain, set()).add(track_id)

    def drop(self, domain: str, track_id: int) -> None:
        self.upserts.get(domain, {}).pop(track_id, None)
        self.stale.setdefault(domain, set()).add(track_id)

    def move(self, singer_id: int, domain: str, vector: np.ndarray, sign: int) -> None:
        """A track vector joins (+1) or leaves (-1) a singer's tracks in `domain`."""
        self.moves.setdefault((singer_id, domain), []).append((sign, vector))


class Catalog(CatalogBackend):
    """Tracks, singers and their FAISS indexes in one directory. Thread-safe (one lock)."""

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
        self._uuid = db.execute("SELECT value FROM meta WHERE key = 'uuid'").fetchone()[0]
        self._tracks: dict[str, VectorIndex] = {}
        self._singers: dict[str, FlatIndex] = {}
        self._model_sums = ModelSums()  # of the generation the in-memory indexes reflect
        self._closed = False

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        dim: int | None = DEFAULT_DIM,
        index: str = "flat",
        device: str = "auto",
    ) -> Catalog:
        """Open (creating if absent) the catalogue in `directory`.

        `dim`: the vector dimension; None: whatever the catalogue holds (DEFAULT_DIM if new).
        `index`: 'flat' (exact) or 'hnsw' (approximate) search over track vectors; singer
        models are always searched exactly. `device`: 'auto' | 'cpu' | 'cuda[:N]' for FAISS.
        Raises CatalogError for a catalogue of another dimension, a newer schema, or a file
        that is not a catalogue.
        """
        if index not in KINDS:
            raise ValueError(f"index must be one of {KINDS}, got {index!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(
                directory / CATALOG_FILE,
                timeout=60.0,
                isolation_level=None,
                check_same_thread=False,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a returned write survives power loss
            db.execute("PRAGMA foreign_keys=ON")
            dim = _prepare_schema(db, dim, directory)
        except sqlite3.DatabaseError as err:
            raise CatalogError(
                f"{directory / CATALOG_FILE}: not a usable catalogue: {err}"
            ) from err
        catalog = cls(directory, db, dim, index, resolve_gpu(device))
        with catalog._lock:
            catalog._load_or_rebuild()
        return catalog

    def _pragma(self, name: str) -> int:
        return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

    def _read_generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    @property
    def index_path(self) -> Path:
        return self.directory / f"faiss-{self.kind}.npz"

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
            log.log(
                logging.INFO if generation else logging.DEBUG,
                "%s is missing; building it from the catalogue",
                path.name,
            )
            return False
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        expected = {
            "format": INDEX_FORMAT,
            "uuid": self._uuid,
            "kind": self.kind,
            "dim": self.dim,
            "generation": generation,
        }
        if {k: meta.get(k) for k in expected} != expected:
            log.info(
                "%s does not match the catalogue (%s, not %s); rebuilding it",
                path.name,
                {k: meta.get(k) for k in expected},
                expected,
            )
            return False
        groups: dict[str, dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            group, _, name = key.rpartition(".")
            groups.setdefault(group, {})[name] = value
        tracks = {
            d: load_index(self.kind, self.dim, groups[f"tracks.{d}"], self._gpu) for d in DOMAINS
        }
        singers = {d: FlatIndex.from_arrays(self.dim, groups[f"singers.{d}"]) for d in DOMAINS}
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

    # -- persistence of the derived indexes -------------------------------------------
    def save_indexes(self) -> bool:
        """Write the FAISS file if it is behind the catalogue. Returns whether it wrote."""
        with self._lock:
            self._check_open()
            self._sync()
            if self._saved_generation == self._generation:
                return False
            meta = {
                "format": INDEX_FORMAT,
                "uuid": self._uuid,
                "kind": self.kind,
                "dim": self.dim,
                "generation": self._generation,
            }
            arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
            for name, group in (("tracks", self._tracks), ("singers", self._singers)):
                for d, index in group.items():
                    arrays.update({f"{name}.{d}.{k}": v for k, v in index.to_arrays().items()})
            with atomic_write(self.index_path, durable=True) as fh:
                np.savez(fh, **arrays)
            self._saved_generation = self._generation
            return True

    # -- transactions ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise CatalogError("the catalogue is closed")

    @contextmanager
    def _snapshot(self):
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

    @contextmanager
    def _write(self):
        """One write transaction; yields a _Delta to fill. Applies it to FAISS after COMMIT."""
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
            try:
                generation = self._read_generation()
                delta = _Delta()
                yield delta
                # Sums cached by this process hold unless another process wrote since.
                cached = generation == self._generation
                for key, moves in delta.moves.items():
                    total, n = self._sum_after(key, moves, cached)
                    delta.sums[key] = (total, n)
                    delta.models[key] = model_of_sum(total, n)
                for singer_id in {s for s, _ in delta.moves}:  # a singer goes with its last track
                    self._db.execute(
                        "DELETE FROM singers WHERE id = ? AND NOT EXISTS "
                        "(SELECT 1 FROM tracks WHERE singer_id = ?)",
                        (singer_id, singer_id),
                    )
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation + 1),)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._data_version = self._pragma("data_version")
            if generation != self._generation:
                # Another process wrote since we last looked: our indexes lack its changes.
                self._rebuild()
                return
            try:
                self._apply(delta)
                self._generation = generation + 1
                for key, (total, n) in delta.sums.items():
                    self._model_sums.put(key, total, n)
            except Exception:  # committed, so SQLite is right: derive the indexes again
                log.exception("updating the in-memory indexes failed; rebuilding them")
                self._rebuild()

    def _vectors_of(self, singer_id: int, domain: str) -> np.ndarray:
        """A singer's stored track vectors in one domain: float32 (n, dim)."""
        rows = self._db.execute(
            "SELECT vector FROM tracks WHERE singer_id = ? AND domain = ?", (singer_id, domain)
        ).fetchall()
        return self._unpack([r[0] for r in rows])

    def _model_of(self, singer_id: int, domain: str) -> np.ndarray | None:
        vectors = self._vectors_of(singer_id, domain)
        return singer_model(vectors) if len(vectors) else None

    def _sum_after(
        self, key: tuple[int, str], moves: list[tuple[int, np.ndarray]], cached: bool
    ) -> tuple[np.ndarray, int]:
        """(float64 (dim,) sum, count) of a singer's track vectors in one domain once this
        transaction commits: the cached sum moved by the transaction's `moves`, or, when
        not `cached` or not in the cache, summed from the stored vectors (which already
        hold the transaction's changes) as `normalized_mean` sums them."""
        found = self._model_sums.get(key) if cached else None
        if found is not None:
            return shifted(*found, moves)
        vectors = self._vectors_of(*key)
        return np.asarray(vectors, np.float64).sum(axis=0), len(vectors)

    def _apply(self, delta: _Delta) -> None:
        for d in DOMAINS:
            if delta.stale.get(d):
                self._tracks[d].remove(sorted(delta.stale[d]))
            if delta.upserts.get(d):
                ids = sorted(delta.upserts[d])
                self._tracks[d].add(ids, np.stack([delta.upserts[d][i] for i in ids]))
        for (singer_id, d), model in delta.models.items():
            self._singers[d].remove([singer_id])
            if model is not None:
                self._singers[d].add([singer_id], model)

    # -- writes ------------------------------------------------------------------------
    def add_tracks(self, items: Iterable[dict], *, replace: bool = False) -> list[Track]:
        """Add tracks in one transaction; each item has `add_track`'s keyword fields.

        `vector` is (dim,) and is stored L2-normalised. Without `replace`, content already in
        the catalogue for the same checkpoint and domain raises DuplicateTrackError (and
        nothing is written). With `replace`, a track of the same content and domain (any
        checkpoint) is updated in place: it keeps its id, takes the new vector and metadata.
        """
        items = [validated_item(item, self.dim) for item in items]
        if not items:
            return []
        ids: list[int] = []
        with self._write() as delta:
            for item in items:
                ids.append(self._insert(item, replace, delta))
        with self._lock:  # the connection is shared: never run a statement without the lock
            return self._tracks_by_id(ids)

    def _singer_id(self, name: str) -> int:
        self._db.execute(
            "INSERT INTO singers (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,)
        )
        return self._db.execute("SELECT id FROM singers WHERE name = ?", (name,)).fetchone()[0]

    def _insert(self, item: dict, replace: bool, delta: _Delta) -> int:
        singer_id = self._singer_id(item["singer"])
        values = (
            singer_id,
            item["path"],
            item["title"],
            item["external_id"],
            item["duration_s"],
            item["n_segments"],
            item["checkpoint_id"],
            item["vector"].tobytes(),
        )
        existing = []
        if replace:
            existing = self._db.execute(
                "SELECT id, singer_id, vector FROM tracks WHERE content_hash = ? AND domain = ? "
                "ORDER BY checkpoint_id = ? DESC, id",
                (item["content_hash"], item["domain"], item["checkpoint_id"]),
            ).fetchall()
        for old_id, old_singer, old_vector in existing[1:]:  # other checkpoints' copies
            self._db.execute("DELETE FROM tracks WHERE id = ?", (old_id,))
            delta.drop(item["domain"], old_id)
            delta.move(old_singer, item["domain"], self._unpack([old_vector])[0], -1)
        if existing:
            track_id, old_singer, old_vector = existing[0]
            self._db.execute(
                "UPDATE tracks SET singer_id = ?, path = ?, title = ?, external_id = ?, "
                "duration_s = ?, n_segments = ?, checkpoint_id = ?, vector = ? WHERE id = ?",
                (*values, track_id),
            )
            delta.move(old_singer, item["domain"], self._unpack([old_vector])[0], -1)
        else:
            try:
                cursor = self._db.execute(
                    "INSERT INTO tracks (singer_id, path, title, external_id, duration_s, "
                    "n_segments, checkpoint_id, vector, domain, content_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, item["domain"], item["content_hash"], _utc_now()),
                )
            except sqlite3.IntegrityError as err:
                found = self.find_track(item["content_hash"], item["checkpoint_id"], item["domain"])
                raise DuplicateTrackError(
                    found.id if found else None, item["content_hash"]
                ) from err
            track_id = cursor.lastrowid
        delta.upsert(item["domain"], track_id, item["vector"], existed=bool(existing))
        delta.move(singer_id, item["domain"], item["vector"], +1)
        return track_id

    def update_track(self, track_id: int, **changes: Any) -> Track:
        """Change metadata (singer, path, title, external_id) without re-embedding.

        Moving a track to another singer updates both singers' models. Raises
        TrackNotFoundError.
        """
        unknown = set(changes) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"only {METADATA_FIELDS} can be updated, got {sorted(unknown)}")
        with self._write() as delta:
            old = self._get_track(track_id)
            if "singer" in changes:
                name = str(changes.pop("singer") or "").strip()
                if not name:
                    raise ValueError("singer must not be empty")
                new_singer = self._singer_id(name)
                if new_singer != old.singer_id:
                    self._db.execute(
                        "UPDATE tracks SET singer_id = ? WHERE id = ?", (new_singer, track_id)
                    )
                    vector = self._vector(track_id)
                    delta.move(old.singer_id, old.domain, vector, -1)
                    delta.move(new_singer, old.domain, vector, +1)
            for key, value in changes.items():
                self._db.execute(f"UPDATE tracks SET {key} = ? WHERE id = ?", (value, track_id))
        return self.get_track(track_id)

    def remove_tracks(self, track_ids: Iterable[int], *, missing_ok: bool = False) -> list[Track]:
        """Remove tracks in one transaction. Returns those removed.

        Raises TrackNotFoundError for an unknown id (nothing is removed) unless `missing_ok`.
        """
        removed: list[Track] = []
        track_ids = list(dict.fromkeys(int(i) for i in track_ids))
        if not track_ids:
            return removed
        with self._write() as delta:
            for track_id in track_ids:
                try:
                    track = self._get_track(track_id)
                except TrackNotFoundError:
                    if missing_ok:
                        continue
                    raise
                vector = self._vector(track_id)
                self._db.execute("DELETE FROM tracks WHERE id = ?", (track_id,))
                delta.drop(track.domain, track_id)
                delta.move(track.singer_id, track.domain, vector, -1)
                removed.append(track)
        return removed

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _track(row: tuple) -> Track:
        return Track(*row)

    def _get_track(self, track_id: int) -> Track:
        row = self._db.execute(f"{_TRACK_SELECT} WHERE t.id = ?", (int(track_id),)).fetchone()
        if row is None:
            raise TrackNotFoundError(track_id)
        return self._track(row)

    def get_track(self, track_id: int) -> Track:
        """The track with this id. Raises TrackNotFoundError."""
        with self._lock:
            self._check_open()
            return self._get_track(track_id)

    def get_vector(self, track_id: int) -> np.ndarray:
        """The stored vector of a track: float32 (dim,), L2-normalised."""
        with self._lock:
            self._check_open()
            return self._vector(track_id)

    def _vector(self, track_id: int) -> np.ndarray:
        row = self._db.execute(
            "SELECT vector FROM tracks WHERE id = ?", (int(track_id),)
        ).fetchone()
        if row is None:
            raise TrackNotFoundError(track_id)
        return self._unpack([row[0]])[0]

    def find_track(self, content_hash: str, checkpoint_id: str, domain: str) -> Track | None:
        """The track of this content embedded by this checkpoint in this domain, if any."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                f"{_TRACK_SELECT} WHERE t.content_hash = ? AND t.checkpoint_id = ? "
                "AND t.domain = ?",
                (content_hash, checkpoint_id, domain),
            ).fetchone()
        return self._track(row) if row else None

    def _tracks_by_id(self, ids: list[int]) -> list[Track]:
        """Tracks in the order of `ids` (unknown ids are left out)."""
        found: dict[int, Track] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"{_TRACK_SELECT} WHERE t.id IN ({marks})", chunk):
                found[row[0]] = self._track(row)
        return [found[i] for i in ids if i in found]

    def _track_ids(
        self, singer: str | None, checkpoint_id: str | None, domain: str | None
    ) -> list[int]:
        clauses, params = [], []
        for column, value in (
            ("s.name", singer),
            ("t.checkpoint_id", checkpoint_id),
            ("t.domain", domain),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                f"SELECT t.id FROM tracks t JOIN singers s ON s.id = t.singer_id{where} "
                "ORDER BY t.id",
                params,
            ).fetchall()
        return [r[0] for r in rows]

    def _list_tracks(
        self, singer: str | None, domain: str | None, after_id: int, limit: int
    ) -> list[Track]:
        clauses: list[str] = ["t.id > ?"]
        params: list[object] = [after_id]
        for column, value in (("s.name", singer), ("t.domain", domain)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                f"{_TRACK_SELECT} WHERE {' AND '.join(clauses)} ORDER BY t.id LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [self._track(r) for r in rows]

    def iter_tracks(self) -> Iterator[Track]:
        """Every track, by id; pages through SQLite without holding the lock in between."""
        last = 0
        while True:
            with self._lock:
                self._check_open()
                rows = self._db.execute(
                    f"{_TRACK_SELECT} WHERE t.id > ? ORDER BY t.id LIMIT 1000", (last,)
                ).fetchall()
            if not rows:
                return
            yield from (self._track(r) for r in rows)
            last = rows[-1][0]

    def _singers_by_id(self, ids: list[int]) -> dict[int, Singer]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT s.id, s.name, t.domain, count(t.id) FROM singers s "
            f"LEFT JOIN tracks t ON t.singer_id = s.id WHERE s.id IN ({marks}) "
            "GROUP BY s.id, t.domain",
            ids,
        ).fetchall()
        names: dict[int, str] = {}
        counts: dict[int, dict[str, int]] = {}
        for singer_id, name, domain, n in rows:
            names[singer_id] = name
            counts.setdefault(singer_id, dict.fromkeys(DOMAINS, 0))
            if domain is not None:
                counts[singer_id][domain] = n
        return {i: Singer(i, names[i], counts[i]) for i in ids if i in names}

    def list_singers(self, offset: int = 0, limit: int = 50) -> tuple[int, list[Singer]]:
        """(total number of singers, one page of them ordered by name)."""
        with self._lock:
            self._check_open()
            total = self._db.execute("SELECT count(*) FROM singers").fetchone()[0]
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM singers ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?",
                    (max(0, int(limit)), max(0, int(offset))),
                )
            ]
            singers = self._singers_by_id(ids)
        return total, [singers[i] for i in ids]

    def get_singer(self, name: str) -> Singer | None:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT id FROM singers WHERE name = ?", (name,)).fetchone()
            return self._singers_by_id([row[0]]).get(row[0]) if row else None

    def singer_vector(self, singer_id: int, domain: str) -> np.ndarray | None:
        """A singer's model in one domain, computed from the stored vectors (None: no tracks)."""
        with self._lock:
            self._check_open()
            return self._model_of(singer_id, domain)

    def _track_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DOMAINS, 0)
        counts.update(self._db.execute("SELECT domain, count(*) FROM tracks GROUP BY domain"))
        return counts

    def checkpoint_ids(self) -> set[str]:
        """The checkpoints whose vectors the catalogue holds."""
        with self._lock:
            self._check_open()
            return {r[0] for r in self._db.execute("SELECT DISTINCT checkpoint_id FROM tracks")}

    def stats(self) -> dict:
        """Counts and configuration, JSON-serialisable."""
        with self._lock:
            self._check_open()
            with self._snapshot():
                n_tracks = self._track_counts()
                n_singers = self._db.execute("SELECT count(*) FROM singers").fetchone()[0]
                checkpoints = dict(
                    self._db.execute(
                        "SELECT checkpoint_id, count(*) FROM tracks GROUP BY checkpoint_id"
                    )
                )
                hours = self._db.execute("SELECT coalesce(sum(duration_s), 0) FROM tracks")
                duration_h = hours.fetchone()[0] / 3600.0
                generation = self._read_generation()
        return {
            "n_tracks": n_tracks,
            "n_singers": n_singers,
            "checkpoint_ids": checkpoints,
            "duration_h": round(duration_h, 3),
            "index": self.kind,
            "dim": self.dim,
            "faiss_device": "cpu" if self._gpu is None else f"cuda:{self._gpu}",
            "schema_version": SCHEMA_VERSION,
            "generation": generation,
            "directory": str(self.directory),
        }

    # -- search ------------------------------------------------------------------------
    def _search_tracks(self, query: np.ndarray, k: int, where: TrackFilter) -> list[TrackHit]:
        # A singer's tracks are scored exactly from their stored vectors, not through FAISS.
        q = query[None, :]
        domain, singer, min_score = where.domain, where.singer, where.min_score
        with self._lock:
            self._check_open()
            self._sync()
            scored: list[tuple[float, int]] = []
            if singer is not None:
                sql, params = "s.name = ?", [singer]
                if domain is not None:
                    sql, params = sql + " AND t.domain = ?", [singer, domain]
                rows = self._db.execute(
                    "SELECT t.id, t.vector FROM tracks t JOIN singers s ON s.id = t.singer_id "
                    f"WHERE {sql}",
                    params,
                ).fetchall()
                if rows:
                    scores = self._unpack([r[1] for r in rows]) @ q[0]
                    scored = [(float(x), int(r[0])) for x, r in zip(scores, rows, strict=True)]
            else:
                for d in [domain] if domain else DOMAINS:
                    scores, ids = self._tracks[d].search(q, k)
                    scored += [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
            scored = sorted(scored, key=lambda p: (-p[0], p[1]))[:k]
            if min_score is not None:
                scored = [p for p in scored if p[0] >= min_score]
            tracks = {t.id: t for t in self._tracks_by_id([i for _, i in scored])}
        return [TrackHit(tracks[i], s) for s, i in scored if i in tracks]

    def n_singers(self, domain: str) -> int:
        """Singers with at least one track in `domain` (the candidates of search_singers)."""
        check_domain(domain, optional=False)
        with self._lock:
            self._check_open()
            self._sync()
            return len(self._singers[domain])

    def _search_singers(self, query: np.ndarray, k: int, domain: str) -> list[SingerHit]:
        with self._lock:
            self._check_open()
            self._sync()
            scores, ids = self._singers[domain].search(query[None, :], k)
            pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
            singers = self._singers_by_id([i for _, i in pairs])
        return [
            SingerHit(singers[i], s, domain, singers[i].n_tracks[domain])
            for s, i in pairs
            if i in singers
        ]

    # -- lifecycle ---------------------------------------------------------------------
    def _unpack(self, blobs: list[bytes]) -> np.ndarray:
        """Stored vectors -> float32 (n, dim)."""
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), self.dim)

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


def _prepare_schema(db: sqlite3.Connection, dim: int | None, directory: Path) -> int:
    """Create or check the schema. Returns the catalogue's vector dimension."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"{directory}: catalogue schema version {version} is newer than this software's "
            f"{SCHEMA_VERSION}; upgrade the software"
        )
    if version == 0:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if tables:
            raise CatalogError(
                f"{directory / CATALOG_FILE}: an SQLite file that is not a catalogue"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            if int(db.execute("PRAGMA user_version").fetchone()[0]) == 0:  # not raced
                # Statement by statement: executescript() would commit the transaction.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("dim", str(dim or DEFAULT_DIM)),
                        ("generation", "0"),
                        ("created_at", _utc_now()),
                        ("uuid", uuid.uuid4().hex),
                    ],
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    stored = int(db.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()[0])
    if dim is None:
        return stored
    if stored != dim:
        n = db.execute("SELECT count(*) FROM tracks").fetchone()[0]
        if n:
            raise CatalogError(
                f"{directory}: the catalogue holds {n} vectors of dimension {stored}, "
                f"the model makes {dim}; index into a new directory or re-create this one"
            )
        db.execute("UPDATE meta SET value = ? WHERE key = 'dim'", (str(dim),))
    return dim
