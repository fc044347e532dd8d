"""Writes to the SQLite catalogue: add, replace, update and remove tracks.

Each write is one SQLite transaction (`_write`), which also brings the touched singers'
models up to date (from running sums, `catalog.model_sums`) and bumps the generation; the
in-memory FAISS indexes take the transaction's `IndexDelta` once it has committed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from catalog.base import METADATA_FIELDS, stored_item, validated_item
from catalog.errors import DuplicateTrackError, TrackNotFoundError
from catalog.index_delta import IndexDelta
from catalog.model_sums import model_of_sum, shifted
from catalog.records import StoredTrack, Track
from catalog.sqlite_core import SqliteCore
from catalog.sqlite_schema import utc_now
from model.domains import DOMAINS

log = logging.getLogger("catalog.store")


class SqliteWrites(SqliteCore):
    """The write half of `catalog.store.Catalog`."""

    @contextmanager
    def _write(self) -> Iterator[IndexDelta]:
        """One write transaction; yields an IndexDelta to fill. Applies it after COMMIT."""
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
            try:
                self._check_writable()
                generation = self._read_generation()
                delta = IndexDelta()
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

    def _apply(self, delta: IndexDelta) -> None:
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

    # -- adding ------------------------------------------------------------------------
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

    def _singer_id(self, name: str, wanted: int | None = None) -> int:
        """The id of singer `name`, created if absent (with id `wanted` when it is free)."""
        row = self._db.execute("SELECT id FROM singers WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if wanted is not None:
            taken = self._db.execute("SELECT 1 FROM singers WHERE id = ?", (wanted,)).fetchone()
            if taken is None:
                self._db.execute("INSERT INTO singers (id, name) VALUES (?, ?)", (wanted, name))
                return wanted
        cursor = self._db.execute("INSERT INTO singers (name) VALUES (?)", (name,))
        return int(cursor.lastrowid or 0)

    def _insert(self, item: dict, replace: bool, delta: IndexDelta) -> int:
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
                    (*values, item["domain"], item["content_hash"], utc_now()),
                )
            except sqlite3.IntegrityError as err:
                found = self._db.execute(
                    "SELECT id FROM tracks WHERE content_hash = ? AND checkpoint_id = ? "
                    "AND domain = ?",
                    (item["content_hash"], item["checkpoint_id"], item["domain"]),
                ).fetchone()
                raise DuplicateTrackError(
                    found[0] if found else None, item["content_hash"]
                ) from err
            track_id = int(cursor.lastrowid or 0)
        delta.upsert(item["domain"], track_id, item["vector"], existed=bool(existing))
        delta.move(singer_id, item["domain"], item["vector"], +1)
        return track_id

    def restore_tracks(self, records: Iterable[StoredTrack]) -> list[Track]:
        """Write tracks as given (id, singer, created_at, vector), in one transaction; an
        existing track of the same id is overwritten. A singer keeps their id where it is
        free. Raises DuplicateTrackError for content that another id holds."""
        checked = [(r.track, validated_item(stored_item(r), self.dim)) for r in records]
        if not checked:
            return []
        with self._write() as delta:
            for track, item in checked:
                self._restore(track, item, delta)
        with self._lock:
            return self._tracks_by_id([t.id for t, _ in checked])

    def _restore(self, track: Track, item: dict, delta: IndexDelta) -> None:
        old = self._db.execute(
            "SELECT singer_id, domain, vector FROM tracks WHERE id = ?", (track.id,)
        ).fetchone()
        if old is not None:
            self._db.execute("DELETE FROM tracks WHERE id = ?", (track.id,))
            delta.drop(old[1], track.id)
            delta.move(old[0], old[1], self._unpack([old[2]])[0], -1)
        singer_id = self._singer_id(item["singer"], wanted=track.singer_id)
        try:
            self._db.execute(
                "INSERT INTO tracks (id, singer_id, domain, path, title, external_id, "
                "duration_s, n_segments, content_hash, checkpoint_id, created_at, vector) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    track.id,
                    singer_id,
                    item["domain"],
                    item["path"],
                    item["title"],
                    item["external_id"],
                    item["duration_s"],
                    item["n_segments"],
                    item["content_hash"],
                    item["checkpoint_id"],
                    track.created_at,
                    item["vector"].tobytes(),
                ),
            )
        except sqlite3.IntegrityError as err:
            raise DuplicateTrackError(None, item["content_hash"]) from err
        delta.upsert(item["domain"], track.id, item["vector"], existed=False)
        delta.move(singer_id, item["domain"], item["vector"], +1)

    # -- changing and removing ---------------------------------------------------------
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
