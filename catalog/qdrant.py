"""The catalogue in Qdrant: shared by any number of stateless service replicas and indexers.

Three collections per catalogue name C (`catalog.open_catalog` parses the URL):

    C_tracks    one point per track: id = track id, vector (dim,) L2-normalised, payload =
                every `Track` field + `version` (a fresh token per write of the point)
    C_singers   one point per (singer, domain) model: id = uuid5(singer id, domain), vector
                = L2-normalised mean of that singer's track vectors there, payload = singer_id,
                name, domain, n_tracks, fingerprint (of the tracks it was computed from)
    C_meta      one point: dim, uuid, schema version (the catalogue's identity)

Scores are inner products (Distance.DOT) of L2-normalised vectors, i.e. cosine similarity,
exactly as the FAISS backend answers. Qdrant holds all state, so a process keeps nothing
between calls and sees every other process's writes at its next call.

Ids. Track ids must fit JavaScript numbers (< 2**53) and grow with time (keyset
pagination by id lists tracks in insertion order): milliseconds since 2024 in the high bits,
12 random bits below, strictly increasing within a process. Singer ids are a hash of the
name, so every writer agrees on them without a counter.

Concurrent writers. Qdrant has no multi-point transactions. What this backend guarantees:
- a point write is atomic; a batch is validated (duplicates, fields) before anything is
  written, but a process killed mid-batch can leave part of it (re-running the indexer
  skips what landed, as with SQLite);
- singer models converge: after every write, each touched (singer, domain) model is
  recomputed from the singer's stored track vectors, written, and then the track set is
  read again; if its fingerprint (ids and versions) changed meanwhile, the model is
  recomputed. The last model write is thus always checked against a read made after every
  track write that preceded it, so when writers stop, each model equals the mean of the
  stored vectors (optimistic versioning, no lock);
- duplicate detection is check-then-write: two writers adding the same content at the same
  instant can both succeed (two tracks); the service's per-content lock prevents it within
  one replica, and `indexer remove` cleans up.

Costs. Searches, `find_track`, `list_tracks` and counts use Qdrant's payload indexes;
`stats` (duration sum, singer count) and, in local mode, `checkpoint_ids` scan the payloads
of every point: fine for `indexer stats`, but mind it when /metrics is scraped often on a
catalogue of millions (the service reads checkpoint ids through a facet on a server).

Local mode (`qdrant+local://`, `qdrant+memory://`) runs Qdrant in this process: one process
per folder (it locks it), exact search; for tests and small setups. Its client is not
thread-safe, so calls are serialised with a lock there.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models

from catalog.base import (
    METADATA_FIELDS,
    CatalogBackend,
    TrackFilter,
    check_domain,
    validated_item,
)
from catalog.errors import CatalogError, DuplicateTrackError, TrackNotFoundError
from catalog.records import Singer, SingerHit, Track, TrackHit
from model.domains import DOMAINS
from model.vectors import normalized_mean

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_MODEL_NAMESPACE = uuid.UUID("6f1d3c3e-8f0e-4b5e-9a59-2f3c1d7a9b10")
_META_ID = 1
_PAGE = 1000
_MODEL_RETRIES = 20
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEYWORDS = ("singer", "domain", "content_hash", "checkpoint_id")


def singer_id_of(name: str) -> int:
    """A singer's id: 52 bits of SHA-256 of the name (the same in every process)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:13], 16)


def _model_point_id(singer_id: int, domain: str) -> str:
    return str(uuid.uuid5(_MODEL_NAMESPACE, f"{singer_id}:{domain}"))


def _match(**conditions: Any) -> models.Filter | None:
    """A filter of field == value for every non-None condition (lists: any of)."""
    must: list[models.Condition] = []
    for key, value in conditions.items():
        if value is None:
            continue
        match = (
            models.MatchAny(any=value)
            if isinstance(value, list)
            else models.MatchValue(value=value)
        )
        must.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=must) if must else None


class QdrantCatalog(CatalogBackend):
    """Catalogue in three Qdrant collections; see the module docstring."""

    kind = "qdrant"

    def __init__(self, client: QdrantClient, collection: str, location: str, dim: int):
        """Use `QdrantCatalog.open`."""
        self._client = client
        self.collection = collection
        self.location = location
        self.dim = dim
        self._local = location.startswith("qdrant+")
        # Local mode's client is not thread-safe: one lock per client, shared by handles.
        self._lock = _LOCKS.setdefault(client, threading.RLock()) if self._local else None
        self._tracks = f"{collection}_tracks"
        self._singers = f"{collection}_singers"
        self._meta = f"{collection}_meta"
        self._last_id = 0
        self._id_lock = threading.Lock()
        self._closed = False

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        client: QdrantClient,
        collection: str,
        *,
        location: str,
        dim: int | None = 256,
    ) -> QdrantCatalog:
        """Open (creating if absent) catalogue `collection` on `client`.

        `dim` None: whatever the catalogue holds. Raises CatalogError for a catalogue of
        another dimension holding vectors, a newer schema, or an unreachable server.
        """
        catalog = cls(client, collection, location, dim or 256)
        try:
            catalog._prepare(dim)
        except CatalogError:
            raise
        except Exception as err:  # connection refused, timeouts, HTTP errors
            raise CatalogError(f"{location}: Qdrant is not usable: {err}") from err
        return catalog

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise CatalogError("the catalogue is closed")
        if self._lock is None:
            return fn(*args, **kwargs)
        with self._lock:
            return fn(*args, **kwargs)

    def _prepare(self, dim: int | None) -> None:
        c = self._client
        meta = None
        if self._call(c.collection_exists, self._meta):
            found = self._call(c.retrieve, self._meta, [_META_ID], with_payload=True)
            meta = found[0].payload if found else None
        if meta is not None:
            if int(meta["schema_version"]) > SCHEMA_VERSION:
                raise CatalogError(
                    f"{self.location}: catalogue schema version {meta['schema_version']} is "
                    f"newer than this software's {SCHEMA_VERSION}; upgrade the software"
                )
            stored = int(meta["dim"])
            if dim is None or dim == stored:
                self.dim = stored
                return
            n = self._call(c.count, self._tracks, exact=True).count
            if n:
                raise CatalogError(
                    f"{self.location}: the catalogue holds {n} vectors of dimension {stored}, "
                    f"the model makes {dim}; index into a new collection or delete this one"
                )
            for name in (self._tracks, self._singers, self._meta):
                self._call(c.delete_collection, name)
        self.dim = dim or 256
        self._create_collections()

    def _create_collections(self) -> None:
        c = self._client
        for name, size in ((self._tracks, self.dim), (self._singers, self.dim), (self._meta, 1)):
            if not self._call(c.collection_exists, name):
                self._call(
                    c.create_collection,
                    name,
                    vectors_config=models.VectorParams(size=size, distance=models.Distance.DOT),
                )
        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore")
            for key in _KEYWORDS:
                self._call(
                    c.create_payload_index, self._tracks, key, models.PayloadSchemaType.KEYWORD
                )
            self._call(
                c.create_payload_index, self._tracks, "singer_id", models.PayloadSchemaType.INTEGER
            )
            for key, schema in (
                ("domain", models.PayloadSchemaType.KEYWORD),
                ("name", models.PayloadSchemaType.KEYWORD),
                ("singer_id", models.PayloadSchemaType.INTEGER),
            ):
                self._call(c.create_payload_index, self._singers, key, schema)
        meta = {"dim": self.dim, "uuid": uuid.uuid4().hex, "schema_version": SCHEMA_VERSION}
        self._call(
            c.upsert,
            self._meta,
            [models.PointStruct(id=_META_ID, vector=[1.0], payload=meta)],
            wait=True,
        )

    # -- helpers -----------------------------------------------------------------------
    def _new_ids(self, n: int) -> list[int]:
        """`n` fresh track ids, increasing (see the module docstring)."""
        with self._id_lock:
            now = ((int(time.time() * 1000) - EPOCH_MS) << 12) | secrets.randbits(12)
            first = max(now, self._last_id + 1)
            self._last_id = first + n - 1
        return list(range(first, first + n))

    @staticmethod
    def _track(point: Any) -> Track:
        p = point.payload
        return Track(
            id=int(point.id),
            singer=p["singer"],
            singer_id=int(p["singer_id"]),
            domain=p["domain"],
            path=p.get("path"),
            title=p.get("title"),
            external_id=p.get("external_id"),
            duration_s=float(p["duration_s"]),
            n_segments=int(p["n_segments"]),
            content_hash=p["content_hash"],
            checkpoint_id=p["checkpoint_id"],
            created_at=p["created_at"],
        )

    def _scroll_all(
        self, collection: str, flt: Any, *, payload: bool | list[str] = True, vectors: bool = False
    ) -> list:
        points, offset = [], None
        while True:
            page, offset = self._call(
                self._client.scroll,
                collection,
                scroll_filter=flt,
                limit=_PAGE,
                offset=offset,
                with_payload=payload,
                with_vectors=vectors,
            )
            points += page
            if offset is None:
                return points

    def _retrieve(self, ids: list[int], vectors: bool = False) -> dict[int, Any]:
        if not ids:
            return {}
        found = self._call(
            self._client.retrieve, self._tracks, ids, with_payload=True, with_vectors=vectors
        )
        return {int(p.id): p for p in found}

    def _upsert(self, collection: str, points: list[models.PointStruct]) -> None:
        if points:
            self._call(self._client.upsert, collection, points, wait=True)

    def _delete(self, collection: str, ids: list) -> None:
        if ids:
            self._call(
                self._client.delete,
                collection,
                models.PointIdsList(points=ids),
                wait=True,
            )

    # -- singer models -----------------------------------------------------------------
    def _model_tracks(self, singer_id: int, domain: str, vectors: bool) -> list:
        return self._scroll_all(
            self._tracks,
            _match(singer_id=singer_id, domain=domain),
            payload=["version", "singer"],
            vectors=vectors,
        )

    @staticmethod
    def _fingerprint(points: list) -> str:
        return hashlib.sha256(
            ";".join(sorted(f"{p.id}:{p.payload['version']}" for p in points)).encode()
        ).hexdigest()

    def _refresh_models(self, keys: Iterable[tuple[int, str]]) -> None:
        """Recompute each (singer id, domain) model from the stored tracks until the track set
        it was computed from is still the stored one after the model write."""
        for singer_id, domain in sorted(set(keys)):
            point_id = _model_point_id(singer_id, domain)
            for _ in range(_MODEL_RETRIES):
                points = self._model_tracks(singer_id, domain, vectors=True)
                fingerprint = self._fingerprint(points)
                if points:
                    vectors = np.stack([np.asarray(p.vector, np.float32) for p in points])
                    payload = {
                        "singer_id": singer_id,
                        "name": points[0].payload["singer"],
                        "domain": domain,
                        "n_tracks": len(points),
                        "fingerprint": fingerprint,
                    }
                    model = normalized_mean(vectors)
                    self._upsert(
                        self._singers,
                        [models.PointStruct(id=point_id, vector=model.tolist(), payload=payload)],
                    )
                else:
                    self._delete(self._singers, [point_id])
                after = self._model_tracks(singer_id, domain, vectors=False)
                if self._fingerprint(after) == fingerprint:
                    break
            else:
                log.warning("singer %d (%s): model kept changing under writes", singer_id, domain)

    # -- writes ------------------------------------------------------------------------
    def _existing(self, content_hash: str, domain: str) -> list[Track]:
        points = self._scroll_all(self._tracks, _match(content_hash=content_hash, domain=domain))
        return sorted((self._track(p) for p in points), key=lambda t: t.id)

    def add_tracks(self, items: Iterable[dict], *, replace: bool = False) -> list[Track]:
        items = [validated_item(item, self.dim) for item in items]
        if not items:
            return []
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
            singer_id = singer_id_of(item["singer"])
            payload = {k: item[k] for k in ("domain", "content_hash", "checkpoint_id")}
            payload |= {k: item[k] for k in ("singer", "path", "title", "external_id")}
            payload |= {
                "singer_id": singer_id,
                "duration_s": item["duration_s"],
                "n_segments": item["n_segments"],
                "created_at": kept.created_at if kept else now,
                "version": uuid.uuid4().hex,
            }
            points.append(
                models.PointStruct(id=track_id, vector=item["vector"].tolist(), payload=payload)
            )
            ids.append(track_id)
            touched.add((singer_id, item["domain"]))
            for old in others if kept is None else [kept, *others]:
                touched.add((old.singer_id, old.domain))
            dropped += [t.id for t in others]
        self._upsert(self._tracks, points)
        self._delete(self._tracks, dropped)
        self._refresh_models(touched)
        found = self._retrieve(ids)
        return [self._track(found[i]) for i in ids if i in found]

    def update_track(self, track_id: int, **changes: Any) -> Track:
        unknown = set(changes) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"only {METADATA_FIELDS} can be updated, got {sorted(unknown)}")
        old = self.get_track(track_id)
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
        removed = [self._track(found[i]) for i in ids if i in found]
        self._delete(self._tracks, [t.id for t in removed])
        self._refresh_models({(t.singer_id, t.domain) for t in removed})
        return removed

    # -- reads -------------------------------------------------------------------------
    def get_track(self, track_id: int) -> Track:
        found = self._retrieve([int(track_id)])
        if not found:
            raise TrackNotFoundError(track_id)
        return self._track(found[int(track_id)])

    def get_vector(self, track_id: int) -> np.ndarray:
        found = self._retrieve([int(track_id)], vectors=True)
        if not found:
            raise TrackNotFoundError(track_id)
        return np.asarray(found[int(track_id)].vector, np.float32)

    def find_track(self, content_hash: str, checkpoint_id: str, domain: str) -> Track | None:
        flt = _match(content_hash=content_hash, checkpoint_id=checkpoint_id, domain=domain)
        page, _ = self._call(self._client.scroll, self._tracks, scroll_filter=flt, limit=1)
        return self._track(page[0]) if page else None

    def _track_ids(
        self, singer: str | None, checkpoint_id: str | None, domain: str | None
    ) -> list[int]:
        flt = _match(singer=singer, checkpoint_id=checkpoint_id, domain=domain)
        return sorted(int(p.id) for p in self._scroll_all(self._tracks, flt, payload=False))

    def _list_tracks(
        self, singer: str | None, domain: str | None, after_id: int, limit: int
    ) -> list[Track]:
        # Scroll pages are ordered by point id; `offset` is the first id to include.
        page, _ = self._call(
            self._client.scroll,
            self._tracks,
            scroll_filter=_match(singer=singer, domain=domain),
            limit=limit,
            offset=after_id + 1,
            with_payload=True,
        )
        return [self._track(p) for p in page]

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
        return self._singer_models(_match(name=name)).get(singer_id_of(name))

    def singer_vector(self, singer_id: int, domain: str) -> np.ndarray | None:
        found = self._call(
            self._client.retrieve,
            self._singers,
            [_model_point_id(int(singer_id), domain)],
            with_vectors=True,
        )
        return np.asarray(found[0].vector, np.float32) if found else None

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
            self._client.count, self._tracks, count_filter=_match(**conditions), exact=True
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
        flt = _match(domain=where.domain, singer=where.singer)
        bound = {"score_threshold": where.min_score, "with_payload": True}
        hits = self._nearest(self._tracks, query, k, query_filter=flt, **bound)
        return [TrackHit(self._track(h), float(h.score)) for h in hits]

    def _search_singers(self, query: np.ndarray, k: int, domain: str) -> list[SingerHit]:
        flt = _match(domain=domain)
        hits = self._nearest(self._singers, query, k, query_filter=flt, with_payload=["singer_id"])
        ids = [int((h.payload or {})["singer_id"]) for h in hits]
        singers = self._singer_models(_match(singer_id=ids)) if ids else {}
        return [
            SingerHit(singers[i], float(h.score), domain, singers[i].n_tracks[domain])
            for h, i in zip(hits, ids)
            if i in singers
        ]

    def n_singers(self, domain: str) -> int:
        check_domain(domain, optional=False)
        counted = self._call(
            self._client.count, self._singers, count_filter=_match(domain=domain), exact=True
        )
        return int(counted.count)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        try:
            self._call(self._client.close)
        finally:
            self._closed = True
