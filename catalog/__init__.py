"""The catalogue shared by the service and the indexer: tracks, singers and their vectors.

Backends implement `CatalogBackend` (catalog/base.py): `Catalog` keeps everything in one
directory (SQLite is the source of truth, FAISS indexes derive from it), `QdrantCatalog`
(catalog/qdrant.py, extra `scale`) in a Qdrant collection shared by many processes.
`open_catalog(directory_or_url)` picks one; `content_hash` is the duplicate key of a file.
"""

from catalog.base import CatalogBackend
from catalog.errors import CatalogError, DuplicateTrackError, TrackNotFoundError
from catalog.factory import open_catalog
from catalog.hashing import content_hash
from catalog.records import Singer, SingerHit, Track, TrackHit
from catalog.store import Catalog

__all__ = [
    "Catalog",
    "CatalogBackend",
    "CatalogError",
    "DuplicateTrackError",
    "Singer",
    "SingerHit",
    "Track",
    "TrackHit",
    "TrackNotFoundError",
    "content_hash",
    "open_catalog",
]
