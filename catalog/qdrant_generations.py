"""Indexed roots and generations of a Qdrant catalogue.

    NAME_tracks, NAME_singers, NAME_meta              generation "" (never migrated)
    NAME__GEN_tracks, NAME__GEN_singers, NAME__GEN_meta   generation GEN (`indexer migrate`)
    NAME_live                                         one point: the live generation's name

Switching is one point write to NAME_live (atomic), after the old generation's meta point
was marked retired (its writes then raise CatalogRetiredError). Qdrant has no lock to hold
writers while the switch is checked: a write that passed its retired check just before
the mark can land in the old generation, so the migration compares the old generation
after the switch with what it copied and carries the difference over
(`indexer.migration`). Indexed roots are points of the generation's meta collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from qdrant_client import models

from catalog.base import CatalogBackend
from catalog.base import check_generation_name as check_name
from catalog.errors import CatalogError
from catalog.qdrant_core import QdrantCore
from catalog.qdrant_points import LIVE_ID, META_ID, root_point_id
from catalog.records import GenerationInfo


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


class QdrantGenerations(QdrantCore):
    """Roots and generations of `catalog.qdrant.QdrantCatalog`."""

    # -- indexed roots -----------------------------------------------------------------
    def add_roots(self, folders: Iterable[str]) -> None:
        points = [
            models.PointStruct(
                id=root_point_id(f), vector=[1.0], payload={"root": f, "added_at": _now()}
            )
            for f in sorted({str(f) for f in folders})
            if f not in self.roots()
        ]
        self._upsert(self._meta, points)

    def roots(self) -> list[str]:
        points = self._scroll_all(self._meta, None, payload=["root"])
        return sorted(str(p.payload["root"]) for p in points if (p.payload or {}).get("root"))

    # -- generations -------------------------------------------------------------------
    def generation(self) -> GenerationInfo:
        meta = self._meta_payload() or {}
        return GenerationInfo(
            name=self.generation_name,
            checkpoint_id=meta.get("built_with"),
            checkpoint_file=meta.get("built_with_file"),
            retired=meta.get("retired_by") is not None,
        )

    def live_generation(self) -> str:
        return read_live(self)

    def open_generation(self, name: str, *, dim: int | None) -> CatalogBackend:
        from catalog.qdrant import QdrantCatalog

        return QdrantCatalog.open(
            self._client, self.collection, location=self.location, dim=dim, generation=name
        )

    def _set_meta(self, values: dict) -> None:
        self._call(self._client.set_payload, self._meta, values, points=[META_ID], wait=True)

    def record_build(self, checkpoint_id: str, checkpoint_file: str | None) -> None:
        values = {"built_with": checkpoint_id}
        if checkpoint_file is not None:
            values["built_with_file"] = checkpoint_file
        self._set_meta(values)

    def switch_to(self, shadow: CatalogBackend, ready: Callable[[], bool]) -> bool:
        if not isinstance(shadow, QdrantGenerations) or shadow.collection != self.collection:
            raise CatalogError("a generation can only be switched to one of the same catalogue")
        if shadow.generation_name == self.generation_name:
            raise CatalogError("a generation cannot replace itself")
        if read_live(self) != self.generation_name:
            raise CatalogError(
                f"{self.location}: generation {self.generation_name!r} is not live any more"
            )
        if not ready():
            return False
        self._set_meta({"retired_by": shadow.generation_name})
        write_live(self, shadow.generation_name)
        return True


def read_live(handle: QdrantCore) -> str:
    """The live generation's name at `handle`'s location ("" before any migration)."""
    c = handle._client
    if not handle._call(c.collection_exists, handle._live):
        return ""
    found = handle._call(c.retrieve, handle._live, [LIVE_ID], with_payload=True)
    return check_name(str((found[0].payload or {}).get("generation", ""))) if found else ""


def write_live(handle: QdrantCore, name: str) -> None:
    c = handle._client
    if not handle._call(c.collection_exists, handle._live):
        handle._call(
            c.create_collection,
            handle._live,
            vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
        )
    point = models.PointStruct(id=LIVE_ID, vector=[1.0], payload={"generation": check_name(name)})
    handle._upsert(handle._live, [point])
