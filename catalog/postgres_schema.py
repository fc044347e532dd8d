"""The PostgreSQL catalogue's schema, its migrations, its DSN and its vector type on the wire.

One catalogue is one PostgreSQL schema (namespace) in a database: `postgresql://USER@HOST:5432/
DB?schema=NAME` (default `singer`), so several catalogues share a database and a DBA can see,
grant and back up each on its own. Migrations are numbered and recorded in `schema_version`;
`prepare` runs the missing ones on start, in one transaction under an advisory lock, so
replicas that start together migrate once and a failed migration leaves nothing half done.
A catalogue migrated by newer software (a higher version) is refused, never rewritten.
"""

from __future__ import annotations

import hashlib
import re
import struct
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo

from catalog.errors import CatalogError

DEFAULT_SCHEMA = "singer"
DEFAULT_DIM = 256
#: pgvector's HNSW build parameters (its defaults; bench/bench_search.py measures them at 1M).
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
#: Key of the advisory lock that serialises migrations (and CREATE EXTENSION) per database.
_MIGRATION_LOCK = 0x53494E47  # "SING"

HNSW_INDEX = (
    "CREATE INDEX tracks_{domain}_hnsw ON tracks USING hnsw (vector vector_cosine_ops) "
    f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE domain = '{{domain}}'"
)

#: Rows stay in the table's pages up to 8 kB, so a vector of up to ~1,900 dimensions is read
#: with its row: at the default (2 kB) one of 512 dimensions (2,056 bytes) went to the TOAST
#: table, and an exact scan of 8,000 tracks took 200 ms instead of 55, a write 87 ms, not 9.
INLINE = "toast_tuple_target = 8160"

#: Migration N (1-based) is MIGRATIONS[N - 1]: statements, `{dim}` the vector dimension.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        # A name keeps its id for good (rows are never deleted): no writer ever races a
        # delete of the singer its new track refers to. A singer is listed while it has a
        # model, i.e. at least one track.
        "CREATE TABLE singers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " name text NOT NULL UNIQUE)",
        "CREATE TABLE tracks ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " singer_id bigint NOT NULL REFERENCES singers (id),"
        " domain text NOT NULL CHECK (domain IN ('mono', 'mixed')),"
        " path text, title text, external_id text,"
        " duration_s double precision NOT NULL, n_segments integer NOT NULL,"
        " content_hash text NOT NULL, checkpoint_id text NOT NULL, created_at text NOT NULL,"
        " vector vector({dim}) NOT NULL,"  # L2-normalised
        f" UNIQUE (content_hash, checkpoint_id, domain)) WITH ({INLINE})",
        "CREATE INDEX tracks_by_singer ON tracks (singer_id, domain)",
        "CREATE INDEX tracks_by_content ON tracks (content_hash, domain)",
        "CREATE INDEX tracks_by_checkpoint ON tracks (checkpoint_id)",
        # One HNSW graph per domain, as FAISS keeps one index per domain: a domain's search
        # walks only its own tracks and always finds k of them.
        HNSW_INDEX.format(domain="mono"),
        HNSW_INDEX.format(domain="mixed"),
        "CREATE TABLE singer_models ("
        " singer_id bigint NOT NULL REFERENCES singers (id),"
        " domain text NOT NULL, n_tracks integer NOT NULL,"
        " vector vector({dim}) NOT NULL,"  # L2-normalised mean of the singer's track vectors
        f" PRIMARY KEY (singer_id, domain)) WITH ({INLINE})",
    ),
    (  # 2: the folders the indexer indexed (the service plays files under them)
        "CREATE TABLE roots (path text PRIMARY KEY, added_at text NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
#: Every table the migrations create (an empty catalogue of another dimension drops them).
TABLES = ("singer_models", "tracks", "singers", "meta", "roots")
#: In the catalogue's own schema, once a migration has switched: the live generation's name.
LIVE_TABLE = "live_generation"


def generation_schema(base: str, generation: str) -> str:
    """The schema of generation `generation` ("" is the catalogue's own, `base`): BASE__GEN, or
    where that passes PostgreSQL's 63 bytes, BASE (cut) __ a hash of both."""
    schema = f"{base}__{generation}" if generation else base
    if len(schema.encode()) <= 63:
        return schema
    return f"{base[:40]}__{hashlib.sha256(schema.encode()).hexdigest()[:16]}"


def read_live(conn: psycopg.Connection | psycopg.Cursor, base: str) -> str:
    """The live generation of catalogue `base` ("" before any migration switched)."""
    table = sql.Identifier(base, LIVE_TABLE)
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table.as_string(conn)])
    if found.fetchone() != (True,):
        return ""
    row = conn.execute(sql.SQL("SELECT name FROM {}").format(table)).fetchone()
    return str(row[0]) if row else ""


def write_live(conn: psycopg.Connection | psycopg.Cursor, base: str, name: str) -> None:
    """Point catalogue `base` at generation `name` (in the caller's transaction)."""
    table = sql.Identifier(base, LIVE_TABLE)
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text NOT NULL)").format(table))
    conn.execute(sql.SQL("DELETE FROM {}").format(table))
    conn.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(table), [name])


def connection_options(schema: str) -> str:
    """libpq `options` of a catalogue connection: its schema first on the search path (then
    `public`, pgvector's), commits that wait for the WAL flush, no JIT (it costs a query of
    the HNSW index more than it saves)."""
    return f'-c search_path="{schema}",public -c synchronous_commit=on -c jit=off'


def split_dsn(dsn: str) -> tuple[str, str, dict[str, str]]:
    """(libpq DSN, catalogue schema, our options) of a catalogue URL: `schema`, `ef_search`
    and `pool_size` are ours, every other query parameter is libpq's."""
    url = urlsplit(dsn)
    params = dict(parse_qsl(url.query))
    schema = params.pop("schema", DEFAULT_SCHEMA)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise CatalogError(f"schema must be a lower-case SQL name, got {schema!r}")
    ours: tuple[str, ...] = ("ef_search", "pool_size")
    options = {k: params.pop(k) for k in ours if k in params}
    scheme = "postgresql" if url.scheme == "postgres" else url.scheme
    return urlunsplit((scheme, url.netloc, url.path, urlencode(params), "")), schema, options


def redacted(dsn: str) -> str:
    """The DSN without its password (for logs and `stats`)."""
    url = urlsplit(dsn)
    if url.password is None:
        return dsn
    netloc = url.netloc.replace(f":{url.password}@", ":***@", 1)
    return urlunsplit((url.scheme, netloc, url.path, url.query, ""))


def register_vector(conn: psycopg.Connection, oid: int) -> None:
    """numpy arrays are sent, and `vector` columns read (binary results), in pgvector's binary
    format: uint16 dim, uint16 unused, dim float32, big-endian; exact both ways."""

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: np.ndarray) -> bytes:
            v = np.asarray(obj, ">f4").reshape(-1)
            return struct.pack(">HH", len(v), 0) + v.tobytes()

    VectorDumper.oid = oid

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Buffer) -> np.ndarray:
            return np.frombuffer(bytes(data), ">f4", offset=4).astype(np.float32)

    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(oid, VectorLoader)
    conn.adapters.types.add(TypeInfo("vector", oid, 0))  # by name too, e.g. COPY's set_types


def vector_oid(conn: psycopg.Connection) -> int:
    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise CatalogError("the `vector` type is missing: CREATE EXTENSION vector")
    return info.oid


def prepare(conn: psycopg.Connection, schema: str, dim: int | None) -> int:
    """Create or migrate catalogue `schema` (`conn` autocommit off, the server's default
    search path, so that pgvector goes to `public`); returns its dimension.

    `dim` None: whatever the catalogue holds (DEFAULT_DIM if new). An empty catalogue of
    another dimension is re-created; one holding vectors is refused (CatalogError).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION vector")
            except psycopg.errors.InsufficientPrivilege as err:
                raise CatalogError(
                    "the pgvector extension is not installed in this database and this user may "
                    "not install it: a superuser must run CREATE EXTENSION vector"
                ) from err
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(name))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        found = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(found[0]) if found else 0
        if current > SCHEMA_VERSION:
            raise CatalogError(
                f"catalogue {schema}: schema version {current} is newer than this software's "
                f"{SCHEMA_VERSION}; upgrade the software"
            )
        stored = _stored_dim(conn) if current else None
        if stored is not None and dim is not None and stored != dim:
            n = conn.execute("SELECT count(*) FROM tracks").fetchone()
            if n and n[0]:
                raise CatalogError(
                    f"catalogue {schema}: it holds {n[0]} vectors of dimension {stored}, the "
                    f"model makes {dim}; index into a new schema (?schema=NAME) or drop this one"
                )
            conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")  # not the pointer
            conn.execute("DELETE FROM schema_version")
            current, stored = 0, None
        dim = stored or dim or DEFAULT_DIM
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement.format(dim=dim))
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
            if version == 1:
                conn.execute("INSERT INTO meta VALUES ('dim', %s)", [str(dim)])
        return dim


def _stored_dim(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
    if row is None:
        raise CatalogError("the catalogue's meta table has no dimension")
    return int(row[0])
