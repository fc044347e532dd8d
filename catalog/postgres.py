"""The catalogue in PostgreSQL with pgvector: shared by any number of service replicas and
indexers, with transactions, backups and replication of the database's own.

    SINGER_CATALOG=postgresql://USER:PASSWORD@HOST:5432/DB?schema=singer&ef_search=100&pool_size=8

Tables (catalog/postgres_schema.py, migrated on open): `singers` (name -> id, never deleted),
`tracks` (metadata and `vector(dim)`, one HNSW graph with cosine ops per domain),
`singer_models` (per singer and domain: the L2-normalised mean of its track vectors, and the
number of tracks), `roots`, `meta`, `schema_version`; generations of the catalogue are
schemas of their own (catalog/postgres_generations.py).

Writes. Each call is one transaction at READ COMMITTED, committed with synchronous_commit
on: when it returns, the write is in the WAL on disk (a crash of the server loses nothing
acknowledged). A write recomputes the models of the singers it touched from the stored
vectors (`avg` in float8, then `l2_normalize`), after locking those singers' rows in id
order: a concurrent writer to the same singer waits, and its own recomputation (a new
statement, hence a new snapshot) sees this write, so models always equal the mean of the
stored vectors. Deadlocks and serialisation failures roll back and are retried.

Search. Cosine distance `<=>` on the HNSW graph of each domain (both: one query over the
two, merged), `hnsw.ef_search` = max(ef_search, k) and iterative scans (`strict_order`), so
tracks deleted but not yet vacuumed never leave a search with fewer than k hits. Small
catalogues (postgres_reads.EXACT_MAX_TRACKS, by the planner's row estimate) and searches of
one singer's tracks are exact scans; singer models are always searched exactly, as in FAISS.

Outages. Connections come from a pool that checks each before use and reconnects in the
background: when the server goes away, calls raise CatalogUnavailableError (the service's
503 `catalog_unavailable`) and succeed again once it is back, without a restart. A write
whose commit was cut off was not acknowledged: it may or may not have landed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from catalog.base import (
    METADATA_FIELDS,
    CatalogBackend,
    check_generation_name,
    stored_item,
    validated_item,
)
from catalog.errors import (
    CatalogError,
    CatalogUnavailableError,
    DuplicateTrackError,
    TrackNotFoundError,
)
from catalog.postgres_generations import PostgresGenerations, raise_id_floor
from catalog.postgres_reads import EF_SEARCH, SELECT, PostgresReads
from catalog.postgres_schema import (
    connection_options,
    generation_schema,
    prepare,
    read_live,
    redacted,
    register_vector,
    split_dsn,
    vector_oid,
)
from catalog.records import StoredTrack, Track

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Connections per handle (`?pool_size=N`): a call beyond them waits for one.
POOL_SIZE = 8
#: Seconds a call waits for a connection (the server down, or every connection busy that
#: long: then CatalogUnavailableError).
POOL_TIMEOUT_S = 5.0
RECONNECT_S = 2.0
_RETRIES = 5


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PostgresCatalog(PostgresGenerations, PostgresReads, CatalogBackend):
    """Catalogue in one PostgreSQL schema; see the module docstring."""

    kind = "postgres"

    def __init__(self, pool: ConnectionPool, dsn: str, schema: str, generation: str, dim: int):
        """Use `PostgresCatalog.open`."""
        self._pool = pool
        self._dsn = dsn  # with its password: `open_generation` connects with it
        self.location = redacted(dsn)
        self.base_schema = split_dsn(dsn)[1]
        self.schema = schema
        self.generation_name = generation
        self.dim = dim
        self.ef_search = int(split_dsn(dsn)[2].get("ef_search", EF_SEARCH))
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        dsn: str,
        *,
        dim: int | None = 256,
        pool_size: int | None = None,
        generation: str | None = None,
    ) -> PostgresCatalog:
        """Open (creating or migrating) the catalogue at `dsn` (see the module docstring):
        its live generation, or `generation` ("" the catalogue's own schema).

        `dim` None: whatever the catalogue holds. Raises CatalogUnavailableError when the
        server cannot be reached, CatalogError for a catalogue of another dimension holding
        vectors, a newer schema, or a database without pgvector that we may not install.
        """
        conninfo, base, options = split_dsn(dsn)
        pool_size = pool_size or int(options.get("pool_size", POOL_SIZE))
        kwargs: dict[str, Any] = {"connect_timeout": 5, "application_name": "singer-retrieval"}
        try:
            with psycopg.connect(conninfo, **kwargs) as conn:
                name = read_live(conn, base) if generation is None else generation
                schema = generation_schema(base, check_generation_name(name))
                dim = prepare(conn, schema, dim)
                oid = vector_oid(conn)
        except psycopg.OperationalError as err:
            raise CatalogUnavailableError(f"{redacted(dsn)}: {err}") from err
        pool = ConnectionPool(
            conninfo,
            kwargs={**kwargs, "options": connection_options(schema)},
            min_size=1,
            max_size=pool_size,
            open=False,
            configure=lambda conn: register_vector(conn, oid),
            check=ConnectionPool.check_connection,  # a connection of a restarted server: drop
            timeout=POOL_TIMEOUT_S,
            # A reconnection gives up after RECONNECT_S (the pool's backoff doubles without
            # bound); the next call then starts a new one at once: while the server is away
            # calls fail, and the first call after it is back gets a connection.
            reconnect_timeout=RECONNECT_S,
            name=f"catalog-{schema}",
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except PoolTimeout as err:
            pool.close()
            raise CatalogUnavailableError(f"{redacted(dsn)}: no connection") from err
        return cls(pool, dsn, schema, name, dim)

    # -- transactions ------------------------------------------------------------------
    def _run(self, body: Callable[[psycopg.Cursor], T]) -> T:
        """`body` in one transaction on a pooled connection (binary results), committed when
        it returns; retried when the server rolled it back for a deadlock or serialisation
        failure. Raises CatalogUnavailableError when the server cannot be reached."""
        if self._closed:
            raise CatalogError("the catalogue is closed")
        for attempt in range(_RETRIES):
            try:
                with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
                    return body(cur)
            except psycopg.errors.TransactionRollback as err:  # nothing was written
                if attempt == _RETRIES - 1:
                    raise CatalogError(f"the catalogue stayed busy: {err}") from err
                log.info("catalogue transaction rolled back (%s); retrying", err.sqlstate)
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as err:
                raise CatalogUnavailableError(f"{self.location}: {err}") from err  # or all busy
        raise AssertionError("unreachable")

    def _singer_id(self, cur: psycopg.Cursor, name: str, wanted: int | None = None) -> int:
        """The id of singer `name`, registered now if new (as `wanted` where it is free)."""
        query = "SELECT id FROM singers WHERE name = %s"
        row = cur.execute(query, [name]).fetchone()
        if row is None:  # (an INSERT that conflicts would still use up an identity value)
            free = (
                wanted is not None
                and not cur.execute("SELECT 1 FROM singers WHERE id = %s", [wanted]).fetchone()
            )
            if free:
                raise_id_floor(cur, self.schema, "singers", int(wanted or 0))
                cur.execute(
                    "INSERT INTO singers (id, name) OVERRIDING SYSTEM VALUE VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [wanted, name],
                )
            else:
                cur.execute("INSERT INTO singers (name) VALUES (%s) ON CONFLICT DO NOTHING", [name])
            row = cur.execute(query, [name]).fetchone()
        assert row is not None  # inserted now or by a committed writer (rows stay)
        return int(row[0])

    @staticmethod
    def _refresh_models(cur: psycopg.Cursor, keys: set[tuple[int, str]]) -> None:
        """Recompute the (singer id, domain) models from the stored vectors, the singers'
        rows locked first, in id order (see the module docstring)."""
        if not keys:
            return
        singers = sorted({s for s, _ in keys})
        cur.execute(
            "SELECT id FROM singers WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", [singers]
        )
        for singer_id, domain in sorted(keys):
            cur.execute(
                "INSERT INTO singer_models (singer_id, domain, n_tracks, vector)"
                " SELECT %s, %s, count(*), l2_normalize(avg(vector)) FROM tracks"
                " WHERE singer_id = %s AND domain = %s HAVING count(*) > 0"
                " ON CONFLICT (singer_id, domain) DO UPDATE"
                " SET n_tracks = excluded.n_tracks, vector = excluded.vector",
                [singer_id, domain, singer_id, domain],
            )
            if cur.rowcount == 0:  # no track left there
                cur.execute(
                    "DELETE FROM singer_models WHERE singer_id = %s AND domain = %s",
                    [singer_id, domain],
                )

    # -- writes ------------------------------------------------------------------------
    def add_tracks(self, items: Iterable[dict], *, replace: bool = False) -> list[Track]:
        items = [validated_item(item, self.dim) for item in items]
        if not items:
            return []

        def write(cur: psycopg.Cursor) -> list[Track]:
            self._writable(cur)
            ids, touched = [], set()
            for item in items:
                track_id, old = self._insert(cur, item, replace)
                ids.append(track_id)
                touched |= old
            self._refresh_models(cur, touched)
            return self._tracks_by_id(cur, ids)

        return self._run(write)

    def _insert(self, cur: psycopg.Cursor, item: dict, replace: bool) -> tuple[int, set]:
        """Write one item; returns its track id and the (singer id, domain) models touched."""
        singer_id, domain = self._singer_id(cur, item["singer"]), item["domain"]
        values = [singer_id, item["path"], item["title"], item["external_id"]]
        values += [item["duration_s"], item["n_segments"], item["checkpoint_id"], item["vector"]]
        touched = {(singer_id, domain)}
        existing = []
        if replace:  # this content in this domain, the same checkpoint's copy first
            existing = cur.execute(
                "SELECT id, singer_id FROM tracks WHERE content_hash = %s AND domain = %s"
                " ORDER BY checkpoint_id = %s DESC, id FOR UPDATE",
                [item["content_hash"], domain, item["checkpoint_id"]],
            ).fetchall()
            touched |= {(old_singer, domain) for _, old_singer in existing}
            if len(existing) > 1:  # other checkpoints' copies
                cur.execute("DELETE FROM tracks WHERE id = ANY(%s)", [[i for i, _ in existing[1:]]])
        if existing:
            cur.execute(
                "UPDATE tracks SET singer_id = %s, path = %s, title = %s, external_id = %s,"
                " duration_s = %s, n_segments = %s, checkpoint_id = %s, vector = %s"
                " WHERE id = %s",
                [*values, existing[0][0]],
            )
            return int(existing[0][0]), touched
        row = cur.execute(
            "INSERT INTO tracks (singer_id, path, title, external_id, duration_s, n_segments,"
            " checkpoint_id, vector, domain, content_hash, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (content_hash, checkpoint_id, domain) DO NOTHING RETURNING id",
            [*values, domain, item["content_hash"], _now()],
        ).fetchone()
        if row is None:
            found = self._find(cur, item["content_hash"], item["checkpoint_id"], domain)
            raise DuplicateTrackError(found.id if found else None, item["content_hash"])
        return int(row[0]), touched

    _RESTORED = ("domain", "path", "title", "external_id", "duration_s", "n_segments",
                 "content_hash", "checkpoint_id")  # fmt: skip

    def restore_tracks(self, records: Iterable[StoredTrack]) -> list[Track]:
        """`CatalogBackend.restore_tracks` in one transaction (a singer keeps their id where
        it is free; the id sequences move past the ids written)."""
        checked = [(r.track, validated_item(stored_item(r), self.dim)) for r in records]
        if not checked:
            return []

        def write(cur: psycopg.Cursor) -> list[Track]:
            self._writable(cur)
            raise_id_floor(cur, self.schema, "tracks", max(t.id for t, _ in checked))
            touched = set()
            for track, item in checked:
                cur.execute(
                    "DELETE FROM tracks WHERE id = %s RETURNING singer_id, domain", [track.id]
                )
                touched |= {(int(s), str(d)) for s, d in cur.fetchall()}
                singer_id = self._singer_id(cur, item["singer"], wanted=track.singer_id)
                names = ", ".join(self._RESTORED)
                values = [track.id, singer_id, *(item[c] for c in self._RESTORED)]
                row = cur.execute(
                    f"INSERT INTO tracks (id, singer_id, {names}, created_at, vector)"
                    f" OVERRIDING SYSTEM VALUE VALUES ({', '.join(['%s'] * (len(values) + 2))})"
                    " ON CONFLICT (content_hash, checkpoint_id, domain) DO NOTHING RETURNING id",
                    [*values, track.created_at, item["vector"]],
                ).fetchone()
                if row is None:
                    raise DuplicateTrackError(None, item["content_hash"])
                touched.add((singer_id, item["domain"]))
            self._refresh_models(cur, touched)
            return self._tracks_by_id(cur, [t.id for t, _ in checked])

        return self._run(write)

    def update_track(self, track_id: int, **changes: Any) -> Track:
        unknown = set(changes) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"only {METADATA_FIELDS} can be updated, got {sorted(unknown)}")
        name = None
        if "singer" in changes:
            name = str(changes.pop("singer") or "").strip()
            if not name:
                raise ValueError("singer must not be empty")

        def write(cur: psycopg.Cursor) -> Track:
            self._writable(cur)
            old = self._get(cur, track_id, lock=True)
            for key, value in changes.items():
                query = sql.SQL("UPDATE tracks SET {} = %s WHERE id = %s")
                cur.execute(query.format(sql.Identifier(key)), [value, old.id])
            if name is not None:
                singer_id = self._singer_id(cur, name)
                if singer_id != old.singer_id:
                    cur.execute(
                        "UPDATE tracks SET singer_id = %s WHERE id = %s", [singer_id, old.id]
                    )
                    self._refresh_models(
                        cur, {(old.singer_id, old.domain), (singer_id, old.domain)}
                    )
            return self._get(cur, old.id)

        return self._run(write)

    def remove_tracks(self, track_ids: Iterable[int], *, missing_ok: bool = False) -> list[Track]:
        ids = list(dict.fromkeys(int(i) for i in track_ids))
        if not ids:
            return []

        def write(cur: psycopg.Cursor) -> list[Track]:
            self._writable(cur)
            cur.execute(f"{SELECT} WHERE t.id = ANY(%s) ORDER BY t.id FOR UPDATE OF t", [ids])
            found = {row[0]: self._track(row) for row in cur.fetchall()}
            missing = [i for i in ids if i not in found]
            if missing and not missing_ok:
                raise TrackNotFoundError(missing[0])
            cur.execute("DELETE FROM tracks WHERE id = ANY(%s)", [list(found)])
            self._refresh_models(cur, {(t.singer_id, t.domain) for t in found.values()})
            return [found[i] for i in ids if i in found]

        return self._run(write)

    # -- search ------------------------------------------------------------------------

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
