"""What every `python -m indexer` command does first: open the catalogue it names."""

from __future__ import annotations

import argparse
import logging
import os

from catalog import CatalogBackend, open_catalog
from catalog.sqlite_generations import generation_names

log = logging.getLogger("indexer")


def open_target(args: argparse.Namespace, dim: int | None = None) -> CatalogBackend:
    """The catalogue of `--index DIR` or `--catalog URL` (its live generation). The Qdrant
    API key comes from SINGER_QDRANT_API_KEY."""
    return open_catalog(
        args.catalog or args.index,
        dim=dim,
        index=args.index_kind,
        device=getattr(args, "device", "cpu"),
        qdrant_api_key=os.environ.get("SINGER_QDRANT_API_KEY") or None,
    )


def missing_catalogue(args: argparse.Namespace) -> bool:
    """True (and logged) when a catalogue directory holds no catalogue; URLs are opened."""
    if args.catalog is None and not generation_names(args.index):
        log.error("no catalogue in %s", args.index)
        return True
    return False
