"""Writes to the Qdrant catalogue: add, replace, update, remove and restore tracks.

No multi-point transactions: a batch is validated before anything is written, and every
write ends by recomputing the touched singers' models (`QdrantCore._refresh_models`).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any

from qdrant_client import models

from catalog.base import METADATA_FIELDS, stored_item, validated_item
from catalog.errors import CatalogRetiredError, DuplicateTrackError, TrackNotFoundError
from catalog.qdrant_core import QdrantCore
from catalog.qdrant_points import EPOCH_MS, match, singer_id_of, track_of, track_payload
from catalog.records import StoredTrack, Track


class QdrantWrites(QdrantCore):
    """The write half of `catalog.qdrant.QdrantCatalog`."""

    def _check_writable(self) -> None:
        """Refuse a generation that a migration has retired (checked before each write;
        the migration copies what lands in the moment between, catalog/qdrant.py)."""
        live = (self._meta_payload() or {}).get("retired_by")
        if live is not None:
            raise CatalogRetiredError(self.location, str(live))

    def _new_ids(self, n: int) -> list[int]:
        """`n` fresh track ids, increasing (see catalog/qdrant.py)."""
        with self._id_lock:
            now = ((int(time.time() * 1000) - EPOCH_MS) << 12) | secrets.randbits(12)
            first = max(now, self._last_id + 1)
            self._last_id = first + n - 1
        return list(range(first, first + n))

    def _existing(self, content_hash: str, domain: str) -> list[Track]:
        points = self._scroll_all(self._tracks, match(content_hash=content_hash, domain=domain))
        return sorted((track_of(p) for p in points), key=lambda t: t.id)

    def add_tracks(self, items: Iterable[dict], *, replace: bool = False) -> list[Track]:
        items = [validated_item(item, self.dim) for item in items]
        if not items:
            return []
        self._check_writable()
        # Validate the whole batch before writing anything (no transactions to roll back).
        plans: list[tuple[dict, Track | None, list[Track]]] = []
        seen: set[tuple[str, str, str]] = set()
        for item in items:
            key = (item["content_hash"], item["checkpoint_id"], item["domain"])
            existing = self._existing(item["content_hash"], item["domain"])
            same = [t for t in existing if t.checkpoint_id == item["checkpoint_id"]]
            if key in seen or (same and not replace):
                raise DuplicateTrackError(same[0].id if same else None, item["content_hash"])
            seen.add(key)
            if replace and existing:
                keep = (same or existing)[0]
                plans.append((item, keep, [t for t in existing if t.id != keep.id]))
            else:
                plans.append((item, None, []))
        fresh = iter(self._new_ids(sum(kept is None for _, kept, _ in plans)))
        points, ids, dropped, touched = [], [], [], set()
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        for item, kept, others in plans:
            track_id = kept.id if kept is not None else next(fresh)
            payload = track_payload(item, kept.created_at if kept else now)
            points.append(
                models.PointStruct(id=track_id, vector=item["vector"].tolist(), payload=payload)
            )
            ids.append(track_id)
            touched.add((payload["singer_id"], item["domain"]))
            for old in others if kept is None else [kept, *others]:
                touched.add((old.singer_id, old.domain))
            dropped += [t.id for t in others]
        self._upsert(self._tracks, points)
        self._delete(self._tracks, dropped)
        self._refresh_models(touched)
        found = self._retrieve(ids)
        return [track_of(found[i]) for i in ids if i in found]

    def restore_tracks(self, records: Iterable[StoredTrack]) -> list[Track]:
        """Tracks written as given (id, created_at, vector; the singer id is the name's, as
        for every Qdrant write); an existing point of the same id is overwritten."""
        checked = [(r.track, validated_item(stored_item(r), self.dim)) for r in records]
        if not checked:
            return []
        self._check_writable()
        ids = [t.id for t, _ in checked]
        before = self._retrieve(ids)
        touched = {(track_of(p).singer_id, track_of(p).domain) for p in before.values()}
        for track, item in checked:
            same = self._call(
                self._client.scroll,
                self._tracks,
                scroll_filter=match(
                    content_hash=item["content_hash"],
                    checkpoint_id=item["checkpoint_id"],
                    domain=item["domain"],
                ),
                limit=2,
            )[0]
            if any(int(p.id) != track.id for p in same):
                raise DuplicateTrackError(None, item["content_hash"])
        points = []
        for track, item in checked:
            payload = track_payload(item, track.created_at)
            touched.add((payload["singer_id"], item["domain"]))
            points.append(
                models.PointStruct(id=track.id, vector=item["vector"].tolist(), payload=payload)
            )
        self._upsert(self._tracks, points)
        self._refresh_models(touched)
        found = self._retrieve(ids)
        return [track_of(found[i]) for i in ids if i in found]

    def update_track(self, track_id: int, **changes: Any) -> Track:
        unknown = set(changes) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"only {METADATA_FIELDS} can be updated, got {sorted(unknown)}")
        old = self.get_track(track_id)
        self._check_writable()
        payload = dict(changes)
        if "singer" in payload:
            name = str(payload["singer"] or "").strip()
            if not name:
                raise ValueError("singer must not be empty")
            payload |= {"singer": name, "singer_id": singer_id_of(name)}
        payload["version"] = uuid.uuid4().hex
        self._call(
            self._client.set_payload, self._tracks, payload, points=[int(track_id)], wait=True
        )
        if payload.get("singer_id", old.singer_id) != old.singer_id:
            self._refresh_models({(old.singer_id, old.domain), (payload["singer_id"], old.domain)})
        return self.get_track(track_id)

    def remove_tracks(self, track_ids: Iterable[int], *, missing_ok: bool = False) -> list[Track]:
        ids = list(dict.fromkeys(int(i) for i in track_ids))
        found = self._retrieve(ids)
        missing = [i for i in ids if i not in found]
        if missing and not missing_ok:
            raise TrackNotFoundError(missing[0])
        removed = [track_of(found[i]) for i in ids if i in found]
        if removed:
            self._check_writable()
        self._delete(self._tracks, [t.id for t in removed])
        self._refresh_models({(t.singer_id, t.domain) for t in removed})
        return removed
