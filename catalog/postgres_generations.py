"""Indexed roots and generations of a PostgreSQL catalogue (`PostgresGenerations`, a mixin of
catalog/postgres.py's `PostgresCatalog`).

    schema NAME            generation "" (a catalogue never migrated)
    schema NAME__GEN       generation GEN, built by `indexer migrate`
    NAME.live_generation   one row: the live generation's name (absent: "")

Opening `postgresql://...?schema=NAME` opens the live generation. `switch_to` is one
transaction: it takes a SHARE lock on the old generation's tracks, so every writer of it
waits (each write takes ROW EXCLUSIVE on that table first, then checks `retired_by`), calls
`ready()`, moves the new generation's track ids past the old one's, marks the old one
retired and points `live_generation` at the new one; a crash before the commit changes
nothing, one after it finds the switch done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from psycopg import sql

from catalog.base import CatalogBackend
from catalog.base import check_generation_name as check_name
from catalog.errors import CatalogError, CatalogRetiredError
from catalog.postgres_schema import read_live, write_live
from catalog.records import GenerationInfo

T = TypeVar("T")


def last_track_id(cur: psycopg.Cursor, schema: str) -> int:
    """The last id the track id sequence of `schema` handed out (0: none yet)."""
    table = sql.Identifier(schema, "tracks").as_string(cur)
    row = cur.execute(
        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass), 0)",
        [table],
    ).fetchone()
    return int(row[0]) if row else 0


def raise_id_floor(cur: psycopg.Cursor, schema: str, table: str, floor: int) -> None:
    """Ids that `schema`.`table` hands out from now on are above `floor`."""
    name = sql.Identifier(schema, table).as_string(cur)
    cur.execute(
        "SELECT setval(pg_get_serial_sequence(%s, 'id'), greatest(%s, coalesce("
        "pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass), 1)))",
        [name, floor, name],
    )


class PostgresGenerations:
    """Roots and generations of `PostgresCatalog` (see the module docstring)."""

    location: str
    base_schema: str
    schema: str
    generation_name: str
    _dsn: str

    def _run(self, body: Callable[[psycopg.Cursor], T]) -> T:
        raise NotImplementedError  # PostgresCatalog's

    def _writable(self, cur: psycopg.Cursor) -> None:
        """Start a write: wait for a switch in progress, refuse one into a retired generation."""
        cur.execute("LOCK TABLE tracks IN ROW EXCLUSIVE MODE")
        row = cur.execute("SELECT value FROM meta WHERE key = 'retired_by'").fetchone()
        if row is not None:
            raise CatalogRetiredError(self.location, str(row[0]))

    # -- indexed roots -----------------------------------------------------------------
    def add_roots(self, folders: Iterable[str]) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows = [(f, now) for f in sorted({str(f) for f in folders})]
        if rows:
            query = "INSERT INTO roots (path, added_at) VALUES (%s, %s) ON CONFLICT DO NOTHING"
            self._run(lambda cur: cur.executemany(query, rows))

    def roots(self) -> list[str]:
        query = "SELECT path FROM roots ORDER BY path"
        return self._run(lambda cur: [str(r[0]) for r in cur.execute(query).fetchall()])

    # -- generations -------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return self._run(lambda cur: dict(cur.execute("SELECT key, value FROM meta").fetchall()))

    def generation(self) -> GenerationInfo:
        meta = self._meta()
        return GenerationInfo(
            name=self.generation_name,
            checkpoint_id=meta.get("built_with"),
            checkpoint_file=meta.get("built_with_file"),
            retired="retired_by" in meta,
        )

    def live_generation(self) -> str:
        return self._run(lambda cur: read_live(cur, self.base_schema))

    def open_generation(self, name: str, *, dim: int | None) -> CatalogBackend:
        from catalog.postgres import PostgresCatalog

        return PostgresCatalog.open(self._dsn, dim=dim, generation=check_name(name))

    def record_build(self, checkpoint_id: str, checkpoint_file: str | None) -> None:
        values = {"built_with": checkpoint_id}
        if checkpoint_file is not None:
            values["built_with_file"] = checkpoint_file
        query = (
            "INSERT INTO meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self._run(lambda cur: cur.executemany(query, list(values.items())))

    def switch_to(self, shadow: CatalogBackend, ready: Callable[[], bool]) -> bool:
        if not isinstance(shadow, PostgresGenerations) or (
            shadow.base_schema,
            shadow.location,
        ) != (self.base_schema, self.location):
            raise CatalogError("a generation can only be switched to one of the same catalogue")
        other = shadow
        if other.generation_name == self.generation_name:
            raise CatalogError("a generation cannot replace itself")

        def switch(cur: psycopg.Cursor) -> bool:
            cur.execute("LOCK TABLE tracks IN SHARE MODE")  # every writer waits from here
            if read_live(cur, self.base_schema) != self.generation_name:
                raise CatalogError(
                    f"{self.location}: generation {self.generation_name!r} is not live any more"
                )
            self._writable(cur)
            if not ready():
                return False
            # Ids are never reused: the new generation counts on from the old one's.
            raise_id_floor(cur, other.schema, "tracks", last_track_id(cur, self.schema))
            cur.execute("INSERT INTO meta VALUES ('retired_by', %s)", [other.generation_name])
            write_live(cur, self.base_schema, other.generation_name)
            return True

        return self._run(switch)
