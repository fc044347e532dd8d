"""Generations of an SQLite catalogue directory, and the folders indexed into it.

    <index dir>/catalog.sqlite, faiss-*.npz     generation "" (a catalogue never migrated)
    <index dir>/generations/<name>/...          a generation built by `indexer migrate`
    <index dir>/LIVE                            the live generation's name (absent: "")

`Catalog.open(index dir)` opens the live generation. A migration fills another generation
(a catalogue of its own), then `switch_to` makes it live: under the old generation's
write lock it checks that nothing is left to copy, marks the old one retired (its writes
then raise CatalogRetiredError), commits, and replaces LIVE by rename. A process that
opened the old generation keeps reading it until it follows LIVE (the service polls it).
A crash between the commit and the rename leaves the old generation retired and LIVE
unchanged: opening then finishes the switch, since the retired generation names its
successor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from catalog.base import CatalogBackend
from catalog.base import check_generation_name as check_name
from catalog.errors import CatalogError
from catalog.records import GenerationInfo
from catalog.sqlite_core import SqliteCore
from catalog.sqlite_schema import CATALOG_FILE, utc_now
from model.files import atomic_write_text

LIVE_FILE = "LIVE"
GENERATIONS_DIR = "generations"


def read_live(home: Path) -> str:
    """The name of the live generation of index directory `home` ("" without LIVE)."""
    try:
        return check_name((home / LIVE_FILE).read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        return ""


def write_live(home: Path, name: str) -> None:
    """Make generation `name` live (atomic and durable: temporary file, fsync, rename)."""
    atomic_write_text(home / LIVE_FILE, f"{check_name(name)}\n", durable=True)


def generation_dir(home: Path, name: str) -> Path:
    return home / GENERATIONS_DIR / check_name(name) if name else home


def generation_names(home: Path) -> list[str]:
    """Every generation with a catalogue in `home`."""
    names = [""] if (home / CATALOG_FILE).is_file() else []
    folder = home / GENERATIONS_DIR
    if folder.is_dir():
        names += sorted(p.parent.name for p in folder.glob(f"*/{CATALOG_FILE}"))
    return names


class SqliteGenerations(SqliteCore):
    """Roots and generations of `catalog.store.Catalog` (set `home` and `generation_name`)."""

    home: Path
    generation_name: str

    # -- indexed roots -----------------------------------------------------------------
    def add_roots(self, folders: Iterable[str]) -> None:
        new = sorted({str(f) for f in folders})
        if not new:
            return
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")  # no generation bump: the indexes are unchanged
            try:
                self._db.executemany(
                    "INSERT INTO roots (path, added_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [(f, utc_now()) for f in new],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def roots(self) -> list[str]:
        with self._lock:
            self._check_open()
            return [r[0] for r in self._db.execute("SELECT path FROM roots ORDER BY path")]

    # -- generations -------------------------------------------------------------------
    def _set_meta(self, values: dict[str, str]) -> None:
        """Upsert meta keys in their own transaction (no generation bump)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def generation(self) -> GenerationInfo:
        with self._lock:
            self._check_open()
            return GenerationInfo(
                name=self.generation_name,
                checkpoint_id=self._meta("built_with"),
                checkpoint_file=self._meta("built_with_file"),
                retired=self._meta("retired_by") is not None,
            )

    def live_generation(self) -> str:
        return read_live(self.home)

    def open_generation(self, name: str, *, dim: int | None) -> CatalogBackend:
        from catalog.store import Catalog

        device = "cpu" if self._gpu is None else f"cuda:{self._gpu}"
        return Catalog.open(
            self.home, generation=check_name(name), dim=dim, index=self.kind, device=device
        )

    def record_build(self, checkpoint_id: str, checkpoint_file: str | None) -> None:
        values = {"built_with": checkpoint_id}
        if checkpoint_file is not None:
            values["built_with_file"] = checkpoint_file
        with self._lock:
            self._check_open()
            self._set_meta(values)

    def switch_to(self, shadow: CatalogBackend, ready: Callable[[], bool]) -> bool:
        if not isinstance(shadow, SqliteGenerations) or shadow.home != self.home:
            raise CatalogError("a generation can only be switched to one of the same directory")
        if shadow.generation_name == self.generation_name:
            raise CatalogError("a generation cannot replace itself")
        with self._lock:
            self._check_open()
            if read_live(self.home) != self.generation_name:
                raise CatalogError(
                    f"{self.home}: generation {self.generation_name!r} is not live any more"
                )
            self._db.execute("BEGIN IMMEDIATE")  # every other writer waits from here
            try:
                self._check_writable()
                if not ready():
                    self._db.execute("ROLLBACK")
                    return False
                # Ids are never reused: the new generation counts on from the old one's.
                (last,) = self._db.execute(
                    "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'tracks'"
                ).fetchone()
                shadow.raise_id_floor(int(last))
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('retired_by', ?)",
                    (shadow.generation_name,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            write_live(self.home, shadow.generation_name)
        return True

    def raise_id_floor(self, last_id: int) -> None:
        """New tracks get ids above `last_id` (and above every id this generation held)."""
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'tracks'"
                ).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO sqlite_sequence (name, seq) VALUES ('tracks', ?)", (last_id,)
                    )
                elif int(row[0]) < last_id:
                    self._db.execute(
                        "UPDATE sqlite_sequence SET seq = ? WHERE name = 'tracks'", (last_id,)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
