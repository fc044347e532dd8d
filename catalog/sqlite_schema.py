"""The SQLite catalogue's file, schema and schema upgrades.

    catalog.sqlite   meta (key -> value: dim, generation, uuid, created_at, ...), singers,
                     tracks (metadata + float32 vector), roots (folders the indexer indexed)

`PRAGMA user_version` is the schema version. Opening a catalogue of an older version upgrades
it in one transaction; a newer one is refused (the software must be upgraded first).
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from catalog.errors import CatalogError

SCHEMA_VERSION = 2
DEFAULT_DIM = 256
CATALOG_FILE = "catalog.sqlite"

_TABLES_V1 = """
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
# Version 2: the folders indexed into the catalogue (the service may play files in them).
_TABLES_V2 = """
CREATE TABLE roots (path TEXT PRIMARY KEY, added_at TEXT NOT NULL);
"""
UPGRADES = {1: _TABLES_V1, 2: _TABLES_V2}  # version -> statements that reach it

# The columns of a `Track`, in its field order; STORED_SELECT adds the vector.
TRACK_COLUMNS = (
    "t.id, s.name, t.singer_id, t.domain, t.path, t.title, t.external_id, t.duration_s,"
    " t.n_segments, t.content_hash, t.checkpoint_id, t.created_at"
)
TRACK_SELECT = f"SELECT {TRACK_COLUMNS} FROM tracks t JOIN singers s ON s.id = t.singer_id"
STORED_SELECT = (
    f"SELECT {TRACK_COLUMNS}, t.vector FROM tracks t JOIN singers s ON s.id = t.singer_id"
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, durable commits."""
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a returned write survives power loss
    db.execute("PRAGMA foreign_keys=ON")
    return db


def prepare_schema(db: sqlite3.Connection, dim: int | None, directory: Path) -> int:
    """Create, upgrade or check the schema. Returns the catalogue's vector dimension."""
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
    if version < SCHEMA_VERSION:
        _upgrade(db, dim)
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


def _upgrade(db: sqlite3.Connection, dim: int | None) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction (another process may race us:
    the version is read again under the write lock)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # Statement by statement: executescript() would commit the transaction.
            for statement in filter(str.strip, UPGRADES[target].split(";")):
                db.execute(statement)
            if target == 1:
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("dim", str(dim or DEFAULT_DIM)),
                        ("generation", "0"),
                        ("created_at", utc_now()),
                        ("uuid", uuid.uuid4().hex),
                    ],
                )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
