"""The catalogue shared by the service and the indexer: tracks, singers and their vectors.

`Catalog` keeps them in one directory (SQLite is the source of truth, FAISS indexes derive
from it); `content_hash` is the duplicate key of an encoded file.
"""

from catalog.errors import CatalogError, DuplicateTrackError, TrackNotFoundError
from catalog.hashing import content_hash
from catalog.records import Singer, SingerHit, Track, TrackHit
from catalog.store import Catalog

__all__ = [
    "Catalog",
    "CatalogError",
    "DuplicateTrackError",
    "Singer",
    "SingerHit",
    "Track",
    "TrackHit",
    "TrackNotFoundError",
    "content_hash",
]
