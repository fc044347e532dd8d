"""`open_catalog`: a catalogue backend from a directory or a URL.

    data/index                          SQLite + FAISS in that directory (the default)
    qdrant://HOST:6333/NAME             Qdrant server over HTTP, catalogue NAME
    qdrants://HOST:6333/NAME            the same over HTTPS
    qdrant+local:///abs/dir?collection=NAME
    qdrant+local://rel/dir              Qdrant's local mode in a folder (one process)
    qdrant+memory://NAME                Qdrant's local mode in memory (tests)
    postgresql://USER@HOST:5432/DB?schema=NAME
                                        PostgreSQL with pgvector (catalog/postgres.py):
                                        catalogue NAME is that schema (default `singer`)

NAME defaults to `singer`; a Qdrant catalogue NAME is the three collections NAME_tracks,
NAME_singers and NAME_meta. The Qdrant API key comes from `qdrant_api_key` (never the URL);
a PostgreSQL password from the URL or libpq's own sources (PGPASSWORD, ~/.pgpass).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from catalog.base import CatalogBackend
from catalog.errors import CatalogError

DEFAULT_COLLECTION = "singer"
QDRANT_SCHEMES = ("qdrant", "qdrants", "qdrant+local", "qdrant+memory")
POSTGRES_SCHEMES = ("postgresql", "postgres")
URL_SCHEMES = QDRANT_SCHEMES + POSTGRES_SCHEMES


def is_url(target: str | Path) -> bool:
    """True for a catalogue URL (Qdrant, PostgreSQL), False for a catalogue directory."""
    return isinstance(target, str) and urlsplit(target).scheme in URL_SCHEMES


def open_catalog(
    target: str | Path,
    *,
    dim: int | None = 256,
    index: str = "flat",
    device: str = "auto",
    qdrant_api_key: str | None = None,
) -> CatalogBackend:
    """Open (creating if absent) the catalogue at `target` (see the module docstring).

    `index` and `device` apply to the SQLite + FAISS backend; Qdrant and PostgreSQL index on
    their side. Raises CatalogError for an unusable catalogue (CatalogUnavailableError: its
    server cannot be reached), ImportError without `qdrant-client` or `psycopg`.
    """
    if not is_url(target):
        from catalog.store import Catalog

        return Catalog.open(target, dim=dim, index=index, device=device)
    if urlsplit(str(target)).scheme in POSTGRES_SCHEMES:
        from catalog.postgres import PostgresCatalog

        return PostgresCatalog.open(str(target), dim=dim)
    from qdrant_client import QdrantClient

    from catalog.qdrant import QdrantCatalog

    url = urlsplit(str(target))
    query = parse_qs(url.query)
    if url.scheme == "qdrant+memory":
        client = QdrantClient(location=":memory:")
        collection = url.netloc or DEFAULT_COLLECTION
    elif url.scheme == "qdrant+local":
        folder = url.netloc + url.path
        if not folder:
            raise CatalogError(f"{target}: a qdrant+local URL needs a folder")
        Path(folder).mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=folder)
        except RuntimeError as err:  # "already accessed by another instance"
            raise CatalogError(f"{target}: {err}") from err
        collection = query.get("collection", [DEFAULT_COLLECTION])[0]
    else:
        scheme = "https" if url.scheme == "qdrants" else "http"
        host = url.hostname or "localhost"
        client = QdrantClient(
            url=f"{scheme}://{host}", port=url.port or 6333, api_key=qdrant_api_key, timeout=30
        )
        collection = url.path.strip("/") or DEFAULT_COLLECTION
    return QdrantCatalog.open(client, collection, location=str(target), dim=dim)
