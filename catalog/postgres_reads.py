"""The PostgreSQL catalogue's reads (`PostgresReads`, a mixin of catalog/postgres.py's
`PostgresCatalog`): tracks, singers, counts, and searches (the HNSW path and the exact one:
see catalog/postgres.py's docstring).

Each method is one transaction through `_run` (the catalogue's pool and error mapping); a
read sees one consistent snapshot of committed writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg import sql

from catalog.base import TrackFilter, check_domain
from catalog.errors import TrackNotFoundError
from catalog.postgres_schema import SCHEMA_VERSION
from catalog.records import Singer, SingerHit, StoredTrack, Track, TrackHit
from model.domains import DOMAINS

T = TypeVar("T")

EF_SEARCH = 100
#: Up to this many tracks (the planner's estimate) a search scans every vector: exact. A scan
#: costs ~7 us a track (8,000 tracks of 512 dimensions: 55 ms, on the loaded 2-core VM), the
#: HNSW walk a few ms whatever the size.
EXACT_MAX_TRACKS = 2_000

COLUMNS = (
    "t.id, s.name, t.singer_id, t.domain, t.path, t.title, t.external_id, t.duration_s,"
    " t.n_segments, t.content_hash, t.checkpoint_id, t.created_at"
)
SELECT = f"SELECT {COLUMNS} FROM tracks t JOIN singers s ON s.id = t.singer_id"


def search_sql(domains: list[str], *, exact: bool, singer: bool) -> sql.Composed:
    """The k tracks nearest to %(q)s in `domains` (of singer %(singer)s), best first: every
    column of a Track, then the cosine distance. Each domain's own query names the domain as
    a literal, so that the planner picks its partial HNSW index; `exact`: ordered by an
    expression no index serves, so every candidate is scored."""
    order = "(t.vector <=> %(q)s) + 0" if exact else "t.vector <=> %(q)s"
    mine = " AND t.singer_id = (SELECT id FROM singers WHERE name = %(singer)s)" if singer else ""
    parts = [
        sql.SQL(
            "(SELECT t.id, t.vector <=> %(q)s AS d FROM tracks t WHERE t.domain = {}"
            f"{mine} ORDER BY {order} LIMIT %(k)s)"
        ).format(sql.Literal(domain))
        for domain in domains
    ]
    return sql.SQL(
        f"SELECT {COLUMNS}, h.d FROM ({{}}) h JOIN tracks t ON t.id = h.id"
        " JOIN singers s ON s.id = t.singer_id ORDER BY h.d, t.id LIMIT %(k)s"
    ).format(sql.SQL(" UNION ALL ").join(parts))


def scalar(cur: psycopg.Cursor, query: str, params: list | None = None) -> Any:
    """The first column of the one row `query` returns (an aggregate's)."""
    row = cur.execute(query, params).fetchone()
    assert row is not None
    return row[0]


class PostgresReads:
    """Reads of `PostgresCatalog` (see catalog/postgres.py)."""

    dim: int
    location: str
    ef_search: int

    def _run(self, body: Callable[[psycopg.Cursor], T]) -> T:
        raise NotImplementedError  # PostgresCatalog's

    @staticmethod
    def _track(row: tuple) -> Track:
        return Track(*row[:12])

    def _tracks_by_id(self, cur: psycopg.Cursor, ids: list[int]) -> list[Track]:
        cur.execute(f"{SELECT} WHERE t.id = ANY(%s)", [ids])
        found = {row[0]: self._track(row) for row in cur.fetchall()}
        return [found[i] for i in ids if i in found]

    def _get(self, cur: psycopg.Cursor, track_id: int, lock: bool = False) -> Track:
        query = f"{SELECT} WHERE t.id = %s" + (" FOR UPDATE OF t" if lock else "")
        row = cur.execute(query, [int(track_id)]).fetchone()
        if row is None:
            raise TrackNotFoundError(track_id)
        return self._track(row)

    def get_track(self, track_id: int) -> Track:
        return self._run(lambda cur: self._get(cur, track_id))

    def get_vector(self, track_id: int) -> np.ndarray:
        def read(cur: psycopg.Cursor) -> np.ndarray:
            row = cur.execute("SELECT vector FROM tracks WHERE id = %s", [int(track_id)]).fetchone()
            if row is None:
                raise TrackNotFoundError(track_id)
            return row[0]

        return self._run(read)

    def _find(
        self, cur: psycopg.Cursor, content_hash: str, checkpoint_id: str, domain: str
    ) -> Track | None:
        query = f"{SELECT} WHERE t.content_hash = %s AND t.checkpoint_id = %s AND t.domain = %s"
        row = cur.execute(query, [content_hash, checkpoint_id, domain]).fetchone()
        return self._track(row) if row else None

    def find_track(self, content_hash: str, checkpoint_id: str, domain: str) -> Track | None:
        return self._run(lambda cur: self._find(cur, content_hash, checkpoint_id, domain))

    @staticmethod
    def _where(after_id: int = 0, **conditions: str | None) -> tuple[str, list]:
        """' WHERE ...' over t.id > after_id and column = value for every non-None value."""
        clauses: list[str] = ["t.id > %s"]
        params: list[object] = [after_id]
        for column, value in conditions.items():
            if value is not None:
                clauses.append(f"{'s.name' if column == 'singer' else f't.{column}'} = %s")
                params.append(value)
        return " WHERE " + " AND ".join(clauses), params

    def _track_ids(
        self, singer: str | None, checkpoint_id: str | None, domain: str | None
    ) -> list[int]:
        where, params = self._where(singer=singer, checkpoint_id=checkpoint_id, domain=domain)
        query = (
            f"SELECT t.id FROM tracks t JOIN singers s ON s.id = t.singer_id{where} ORDER BY t.id"
        )
        return self._run(lambda cur: [int(r[0]) for r in cur.execute(query, params).fetchall()])

    def _list_tracks(
        self, singer: str | None, domain: str | None, after_id: int, limit: int
    ) -> list[Track]:
        where, params = self._where(after_id, singer=singer, domain=domain)
        query = f"{SELECT}{where} ORDER BY t.id LIMIT %s"
        return self._run(
            lambda cur: [self._track(r) for r in cur.execute(query, [*params, limit]).fetchall()]
        )

    def iter_stored(self) -> Iterator[StoredTrack]:
        """Every track with its vector, by id, a page of 1000 per query."""
        query = SELECT.replace(" FROM", ", t.vector FROM", 1) + " WHERE t.id > %s ORDER BY t.id"

        def page(after: int) -> list[tuple]:
            return self._run(lambda cur: cur.execute(f"{query} LIMIT 1000", [after]).fetchall())

        after = 0
        while rows := page(after):
            yield from (StoredTrack(self._track(r), r[12]) for r in rows)
            after = rows[-1][0]

    @staticmethod
    def _singers(cur: psycopg.Cursor, ids: list[int]) -> dict[int, Singer]:
        """Singers with at least one track, by id, with their track counts per domain."""
        cur.execute(
            "SELECT s.id, s.name, m.domain, m.n_tracks FROM singers s"
            " JOIN singer_models m ON m.singer_id = s.id WHERE s.id = ANY(%s)",
            [ids],
        )
        names: dict[int, str] = {}
        counts: dict[int, dict[str, int]] = {}
        for singer_id, name, domain, n in cur.fetchall():
            names[singer_id] = name
            counts.setdefault(singer_id, dict.fromkeys(DOMAINS, 0))[domain] = n
        return {i: Singer(i, names[i], counts[i]) for i in names}

    def list_singers(self, offset: int = 0, limit: int = 50) -> tuple[int, list[Singer]]:
        def read(cur: psycopg.Cursor) -> tuple[int, list[Singer]]:
            row = cur.execute("SELECT count(DISTINCT singer_id) FROM singer_models").fetchone()
            cur.execute(
                "SELECT s.id FROM singers s WHERE EXISTS (SELECT FROM singer_models m"
                ' WHERE m.singer_id = s.id) ORDER BY lower(s.name) COLLATE "C", s.id'
                " LIMIT %s OFFSET %s",
                [max(0, int(limit)), max(0, int(offset))],
            )
            ids = [int(r[0]) for r in cur.fetchall()]
            singers = self._singers(cur, ids)
            return int(row[0]) if row else 0, [singers[i] for i in ids if i in singers]

        return self._run(read)

    def get_singer(self, name: str) -> Singer | None:
        def read(cur: psycopg.Cursor) -> Singer | None:
            row = cur.execute("SELECT id FROM singers WHERE name = %s", [name]).fetchone()
            return self._singers(cur, [row[0]]).get(row[0]) if row else None

        return self._run(read)

    def singer_vector(self, singer_id: int, domain: str) -> np.ndarray | None:
        query = "SELECT vector FROM singer_models WHERE singer_id = %s AND domain = %s"
        row = self._run(lambda cur: cur.execute(query, [int(singer_id), domain]).fetchone())
        return row[0] if row else None

    def checkpoint_ids(self) -> set[str]:
        # Distinct values by skipping through the index, one probe per checkpoint (a plain
        # DISTINCT would read every entry: ~1M on a catalogue of 1M tracks).
        query = (
            "WITH RECURSIVE c (id) AS (SELECT min(checkpoint_id) FROM tracks UNION ALL"
            " SELECT (SELECT min(checkpoint_id) FROM tracks WHERE checkpoint_id > c.id)"
            " FROM c WHERE c.id IS NOT NULL) SELECT id FROM c WHERE id IS NOT NULL"
        )
        return self._run(lambda cur: {r[0] for r in cur.execute(query).fetchall()})

    def stats(self) -> dict:
        def read(cur: psycopg.Cursor) -> dict:
            counts = dict.fromkeys(DOMAINS, 0)
            counts.update(cur.execute("SELECT domain, count(*) FROM tracks GROUP BY 1").fetchall())
            query = "SELECT checkpoint_id, count(*), sum(duration_s) FROM tracks GROUP BY 1"
            checkpoints = cur.execute(query).fetchall()
            singers = cur.execute("SELECT count(DISTINCT singer_id) FROM singer_models").fetchone()
            return {
                "n_tracks": counts,
                "n_singers": int(singers[0]) if singers else 0,
                "checkpoint_ids": {c: int(n) for c, n, _ in checkpoints},
                "duration_h": round(sum(float(h) for _, _, h in checkpoints) / 3600.0, 3),
                "index": f"pgvector-hnsw (ef_search {self.ef_search})",
                "dim": self.dim,
                "faiss_device": "none (PostgreSQL)",
                "schema_version": SCHEMA_VERSION,
                "directory": self.location,
            }

        return self._run(read)

    def __len__(self) -> int:
        return self._run(lambda cur: int(scalar(cur, "SELECT count(*) FROM tracks")))

    def _exact(self, cur: psycopg.Cursor, k: int) -> bool:
        """Whether to scan every vector: a small catalogue (the planner's row estimate; a
        table never analysed is counted up to the bound). Else sets up the HNSW scan."""
        cur.execute(
            "SELECT reltuples, set_config('hnsw.ef_search', %s, true),"
            " set_config('hnsw.iterative_scan', 'strict_order', true)"
            " FROM pg_class WHERE oid = 'tracks'::regclass",
            [str(min(1000, max(self.ef_search, k)))],
        )
        row = cur.fetchone()
        estimate = float(row[0]) if row else -1.0
        if estimate < 0:
            query = "SELECT count(*) FROM (SELECT FROM tracks LIMIT %s) t"
            estimate = scalar(cur, query, [EXACT_MAX_TRACKS + 1])
        return estimate <= EXACT_MAX_TRACKS

    def _search_tracks(self, query: np.ndarray, k: int, where: TrackFilter) -> list[TrackHit]:
        def read(cur: psycopg.Cursor) -> list[TrackHit]:
            exact = where.singer is not None or self._exact(cur, k)
            domains = [where.domain] if where.domain else list(DOMAINS)
            statement = search_sql(domains, exact=exact, singer=where.singer is not None)
            cur.execute(statement, {"q": query, "k": k, "singer": where.singer})
            return [TrackHit(self._track(r), 1.0 - float(r[12])) for r in cur.fetchall()]

        hits = self._run(read)
        if where.min_score is not None:
            hits = [h for h in hits if h.score >= where.min_score]
        return hits

    def _search_singers(self, query: np.ndarray, k: int, domain: str) -> list[SingerHit]:
        def read(cur: psycopg.Cursor) -> list[SingerHit]:
            cur.execute(
                "SELECT singer_id, vector <=> %s AS d FROM singer_models WHERE domain = %s"
                " ORDER BY d, singer_id LIMIT %s",
                [query, domain, k],
            )
            pairs = [(int(i), 1.0 - float(d)) for i, d in cur.fetchall()]
            singers = self._singers(cur, [i for i, _ in pairs])
            return [
                SingerHit(singers[i], s, domain, singers[i].n_tracks[domain])
                for i, s in pairs
                if i in singers
            ]

        return self._run(read)

    def n_singers(self, domain: str) -> int:
        check_domain(domain, optional=False)
        query = "SELECT count(*) FROM singer_models WHERE domain = %s"
        return self._run(lambda cur: int(scalar(cur, query, [domain])))
