"""The Qdrant catalogue's state: client, collections, point helpers and singer models.

The reads and writes live in `catalog.qdrant_reads` and `catalog.qdrant_writes`, roots and
generations in `catalog.qdrant_generations`; `catalog.qdrant.QdrantCatalog` puts them
together (its docstring describes the layout and what holds under concurrent writers).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models

from catalog.base import CatalogBackend
from catalog.errors import CatalogError
from catalog.qdrant_points import KEYWORDS, META_ID, match, model_point_id
from model.vectors import normalized_mean

log = logging.getLogger("catalog.qdrant")
T = TypeVar("T")

SCHEMA_VERSION = 1
_PAGE = 1000
_MODEL_RETRIES = 20
# Local mode's client is not thread-safe: one lock per client, shared by its handles.
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Handles open on each client (generations share their location's client): the last one
# to close closes the client.
_USERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_USERS_LOCK = threading.Lock()


def collections_of(collection: str, generation: str) -> str:
    """The prefix of a generation's collections: NAME for "", else NAME__GENERATION."""
    return f"{collection}__{generation}" if generation else collection


class QdrantCore(CatalogBackend):
    """Client, collection names and point helpers of one catalogue generation."""

    kind = "qdrant"

    def __init__(
        self, client: QdrantClient, collection: str, location: str, dim: int, generation: str
    ):
        """Use `QdrantCatalog.open`."""
        self._client = client
        self.collection = collection
        self.location = location
        self.dim = dim
        self.generation_name = generation
        self._local = location.startswith("qdrant+")
        self._lock = _LOCKS.setdefault(client, threading.RLock()) if self._local else None
        prefix = collections_of(collection, generation)
        self._tracks = f"{prefix}_tracks"
        self._singers = f"{prefix}_singers"
        self._meta = f"{prefix}_meta"
        self._live = f"{collection}_live"
        self._last_id = 0
        self._id_lock = threading.Lock()
        self._closed = False
        with _USERS_LOCK:
            _USERS[client] = _USERS.get(client, 0) + 1

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise CatalogError("the catalogue is closed")
        if self._lock is None:
            return fn(*args, **kwargs)
        with self._lock:
            return fn(*args, **kwargs)

    # -- opening -----------------------------------------------------------------------
    def _prepare(self, dim: int | None) -> None:
        c = self._client
        meta = self._meta_payload() if self._call(c.collection_exists, self._meta) else None
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
            for key in KEYWORDS:
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
        self._upsert(self._meta, [models.PointStruct(id=META_ID, vector=[1.0], payload=meta)])

    def _meta_payload(self) -> dict[str, Any] | None:
        found = self._call(self._client.retrieve, self._meta, [META_ID], with_payload=True)
        return dict(found[0].payload or {}) if found else None

    # -- points ------------------------------------------------------------------------
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
            match(singer_id=singer_id, domain=domain),
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
            point_id = model_point_id(singer_id, domain)
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

    # -- lifecycle ---------------------------------------------------------------------
    def _detach(self) -> None:
        """Forget this handle without closing the client (a short-lived probe)."""
        if not self._closed:
            with _USERS_LOCK:
                _USERS[self._client] = _USERS.get(self._client, 1) - 1
            self._closed = True

    def close(self) -> None:
        if self._closed:
            return
        with _USERS_LOCK:
            left = _USERS.get(self._client, 1) - 1
            _USERS[self._client] = left
        try:
            if left <= 0:
                self._call(self._client.close)
        finally:
            self._closed = True
