"""How the Qdrant catalogue maps its records to points: ids, payloads and filters."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from qdrant_client import models

from catalog.records import Track

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_MODEL_NAMESPACE = uuid.UUID("6f1d3c3e-8f0e-4b5e-9a59-2f3c1d7a9b10")
_ROOT_NAMESPACE = uuid.UUID("0b7d3f8e-51c2-4c1e-8d3a-6a2f0e9b4c71")
META_ID = 1  # the identity point of a generation's meta collection
LIVE_ID = 1  # the pointer point of a location's live collection
KEYWORDS = ("singer", "domain", "content_hash", "checkpoint_id")


def singer_id_of(name: str) -> int:
    """A singer's id: 52 bits of SHA-256 of the name (the same in every process)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:13], 16)


def model_point_id(singer_id: int, domain: str) -> str:
    return str(uuid.uuid5(_MODEL_NAMESPACE, f"{singer_id}:{domain}"))


def root_point_id(folder: str) -> str:
    return str(uuid.uuid5(_ROOT_NAMESPACE, folder))


def match(**conditions: Any) -> models.Filter | None:
    """A filter of field == value for every non-None condition (lists: any of)."""
    must: list[models.Condition] = []
    for key, value in conditions.items():
        if value is None:
            continue
        matcher = (
            models.MatchAny(any=value)
            if isinstance(value, list)
            else models.MatchValue(value=value)
        )
        must.append(models.FieldCondition(key=key, match=matcher))
    return models.Filter(must=must) if must else None


def track_of(point: Any) -> Track:
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


def track_payload(item: dict, created_at: str) -> dict[str, Any]:
    """The payload of a track point from a validated `add_tracks` item; `version` is a
    fresh token per write (singer models check it, catalog/qdrant_core.py)."""
    payload = {k: item[k] for k in ("domain", "content_hash", "checkpoint_id")}
    payload |= {k: item[k] for k in ("singer", "path", "title", "external_id")}
    payload |= {
        "singer_id": singer_id_of(item["singer"]),
        "duration_s": item["duration_s"],
        "n_segments": item["n_segments"],
        "created_at": created_at,
        "version": uuid.uuid4().hex,
    }
    return payload
