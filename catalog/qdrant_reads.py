"""Reads of the Qdrant catalogue: tracks, singers, counts and searches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from catalog.base import TrackFilter, check_domain
from catalog.errors import TrackNotFoundError
from catalog.qdrant_core import SCHEMA_VERSION, QdrantCore
from catalog.qdrant_points import match, model_point_id, singer_id_of, track_of
from catalog.records import Singer, SingerHit, StoredTrack, Track, TrackHit
from model.domains import DOMAINS

_PAGE = 1000


class QdrantReads(QdrantCore):
    """The read half of `catalog.qdrant.QdrantCatalog`."""

    # -- tracks ------------------------------------------------------------------------
    def get_track(self, track_id: int) -> Track:
        found = self._retrieve([int(track_id)])
        if not found:
            raise TrackNotFoundError(track_id)
        return track_of(found[int(track_id)])

    def get_vector(self, track_id: int) -> np.ndarray:
        found = self._retrieve([int(track_id)], vectors=True)
        if not found:
            raise TrackNotFoundError(track_id)
        return np.asarray(found[int(track_id)].vector, np.float32)

    def find_track(self, content_hash: str, checkpoint_id: str, domain: str) -> Track | None:
        flt = match(content_hash=content_hash, checkpoint_id=checkpoint_id, domain=domain)
        page, _ = self._call(self._client.scroll, self._tracks, scroll_filter=flt, limit=1)
        return track_of(page[0]) if page else None

    def _track_ids(
        self, singer: str | None, checkpoint_id: str | None, domain: str | None
    ) -> list[int]:
        flt = match(singer=singer, checkpoint_id=checkpoint_id, domain=domain)
        return sorted(int(p.id) for p in self._scroll_all(self._tracks, flt, payload=False))

    def _list_tracks(
        self, singer: str | None, domain: str | None, after_id: int, limit: int
    ) -> list[Track]:
        # Scroll pages are ordered by point id; `offset` is the first id to include.
        page, _ = self._call(
            self._client.scroll,
            self._tracks,
            scroll_filter=match(singer=singer, domain=domain),
            limit=limit,
            offset=after_id + 1,
            with_payload=True,
        )
        return [track_of(p) for p in page]

    def iter_stored(self) -> Iterator[StoredTrack]:
        """Every track with its vector, by id, a page of 1,000 per call."""
        offset: Any = None
        while True:
            page, offset = self._call(
                self._client.scroll,
                self._tracks,
                limit=_PAGE,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            yield from (StoredTrack(track_of(p), np.asarray(p.vector, np.float32)) for p in page)
            if offset is None:
                return

    # -- singers -----------------------------------------------------------------------
    def _singer_models(self, flt: Any) -> dict[int, Singer]:
        names: dict[int, str] = {}
        counts: dict[int, dict[str, int]] = {}
        for p in self._scroll_all(
            self._singers, flt, payload=["singer_id", "name", "domain", "n_tracks"]
        ):
            sid = int(p.payload["singer_id"])
            names[sid] = p.payload["name"]
            counts.setdefault(sid, dict.fromkeys(DOMAINS, 0))[p.payload["domain"]] = int(
                p.payload["n_tracks"]
            )
        return {sid: Singer(sid, names[sid], counts[sid]) for sid in names}

    def list_singers(self, offset: int = 0, limit: int = 50) -> tuple[int, list[Singer]]:
        singers = sorted(
            self._singer_models(None).values(), key=lambda s: (s.name.casefold(), s.id)
        )
        start = max(0, int(offset))
        return len(singers), singers[start : start + max(0, int(limit))]

    def get_singer(self, name: str) -> Singer | None:
        return self._singer_models(match(name=name)).get(singer_id_of(name))

    def singer_vector(self, singer_id: int, domain: str) -> np.ndarray | None:
        found = self._call(
            self._client.retrieve,
            self._singers,
            [model_point_id(int(singer_id), domain)],
            with_vectors=True,
        )
        return np.asarray(found[0].vector, np.float32) if found else None

    # -- the catalogue as a whole ------------------------------------------------------
    def _checkpoint_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self._scroll_all(self._tracks, None, payload=["checkpoint_id"]):
            counts[p.payload["checkpoint_id"]] = counts.get(p.payload["checkpoint_id"], 0) + 1
        return counts

    def checkpoint_ids(self) -> set[str]:
        if self._local:
            return set(self._checkpoint_counts())
        # Server: a facet over the indexed keyword (no scan of the collection).
        hits = self._call(self._client.facet, self._tracks, "checkpoint_id", limit=1000, exact=True)
        return {str(h.value) for h in hits.hits}

    def _count(self, **conditions: Any) -> int:
        return self._call(
            self._client.count, self._tracks, count_filter=match(**conditions), exact=True
        ).count

    def stats(self) -> dict:
        durations = self._scroll_all(self._tracks, None, payload=["duration_s"])
        return {
            "n_tracks": {d: self._count(domain=d) for d in DOMAINS},
            "n_singers": len(self._singer_models(None)),
            "checkpoint_ids": self._checkpoint_counts(),
            "duration_h": round(sum(p.payload["duration_s"] for p in durations) / 3600.0, 3),
            "index": "qdrant",
            "dim": self.dim,
            "faiss_device": "none (Qdrant)",
            "schema_version": SCHEMA_VERSION,
            "directory": self.location,
        }

    def __len__(self) -> int:
        return self._count()

    # -- search ------------------------------------------------------------------------
    def _nearest(self, collection: str, query: np.ndarray, k: int, **options: Any) -> list[Any]:
        """The `k` points of `collection` nearest to `query`, best first."""
        hits = self._call(
            self._client.query_points, collection, query=query.tolist(), limit=k, **options
        )
        return list(hits.points)

    def _search_tracks(self, query: np.ndarray, k: int, where: TrackFilter) -> list[TrackHit]:
        flt = match(domain=where.domain, singer=where.singer)
        bound = {"score_threshold": where.min_score, "with_payload": True}
        hits = self._nearest(self._tracks, query, k, query_filter=flt, **bound)
        return [TrackHit(track_of(h), float(h.score)) for h in hits]

    def _search_singers(self, query: np.ndarray, k: int, domain: str) -> list[SingerHit]:
        flt = match(domain=domain)
        hits = self._nearest(self._singers, query, k, query_filter=flt, with_payload=["singer_id"])
        ids = [int((h.payload or {})["singer_id"]) for h in hits]
        singers = self._singer_models(match(singer_id=ids)) if ids else {}
        return [
            SingerHit(singers[i], float(h.score), domain, singers[i].n_tracks[domain])
            for h, i in zip(hits, ids)
            if i in singers
        ]

    def n_singers(self, domain: str) -> int:
        check_domain(domain, optional=False)
        counted = self._call(
            self._client.count, self._singers, count_filter=match(domain=domain), exact=True
        )
        return int(counted.count)
