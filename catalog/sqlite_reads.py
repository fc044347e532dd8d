"""Reads of the SQLite catalogue: tracks, singers, counts, and searches through FAISS."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from catalog.base import TrackFilter, check_domain
from catalog.records import Singer, SingerHit, StoredTrack, Track, TrackHit
from catalog.sqlite_core import SqliteCore
from catalog.sqlite_schema import SCHEMA_VERSION, STORED_SELECT, TRACK_SELECT
from model.domains import DOMAINS


class SqliteReads(SqliteCore):
    """The read half of `catalog.store.Catalog`."""

    # -- tracks ------------------------------------------------------------------------
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

    def find_track(self, content_hash: str, checkpoint_id: str, domain: str) -> Track | None:
        """The track of this content embedded by this checkpoint in this domain, if any."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                f"{TRACK_SELECT} WHERE t.content_hash = ? AND t.checkpoint_id = ? AND t.domain = ?",
                (content_hash, checkpoint_id, domain),
            ).fetchone()
        return self._track(row) if row else None

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
                f"{TRACK_SELECT} WHERE {' AND '.join(clauses)} ORDER BY t.id LIMIT ?",
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
                    f"{TRACK_SELECT} WHERE t.id > ? ORDER BY t.id LIMIT 1000", (last,)
                ).fetchall()
            if not rows:
                return
            yield from (self._track(r) for r in rows)
            last = rows[-1][0]

    def iter_stored(self) -> Iterator[StoredTrack]:
        """Every track with its vector, by id, a page of 1,000 per query."""
        last = 0
        while True:
            with self._lock:
                self._check_open()
                rows = self._db.execute(
                    f"{STORED_SELECT} WHERE t.id > ? ORDER BY t.id LIMIT 1000", (last,)
                ).fetchall()
            if not rows:
                return
            vectors = self._unpack([r[-1] for r in rows])
            yield from (StoredTrack(self._track(r[:-1]), v) for r, v in zip(rows, vectors))
            last = rows[-1][0]

    # -- singers -----------------------------------------------------------------------
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

    # -- the catalogue as a whole ------------------------------------------------------
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
