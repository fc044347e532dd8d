"""What every `python -m indexer` command does first: open the catalogue it names."""

from __future__ import annotations

import argparse
import logging

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from catalog import CatalogBackend, open_catalog
from catalog.sqlite_generations import generation_names

log = logging.getLogger("indexer")


class IndexerSecrets(BaseSettings):
    """What the indexer's commands read from the environment rather than the command line
    (a secret does not belong in argv, which `ps` shows)."""

    model_config = SettingsConfigDict(env_prefix="SINGER_", env_ignore_empty=True, extra="ignore")

    qdrant_api_key: SecretStr | None = Field(
        None, description="SINGER_QDRANT_API_KEY: API key of the Qdrant server of --catalog"
    )


def open_target(args: argparse.Namespace, dim: int | None = None) -> CatalogBackend:
    """The catalogue of `--index DIR` or `--catalog URL` (its live generation). The Qdrant
    API key comes from SINGER_QDRANT_API_KEY (`IndexerSecrets`)."""
    key = IndexerSecrets().qdrant_api_key
    return open_catalog(
        args.catalog or args.index,
        dim=dim,
        index=args.index_kind,
        device=getattr(args, "device", "cpu"),
        qdrant_api_key=key.get_secret_value() if key else None,
    )


def missing_catalogue(args: argparse.Namespace) -> bool:
    """True (and logged) when a catalogue directory holds no catalogue; URLs are opened."""
    if args.catalog is None and not generation_names(args.index):
        log.error("no catalogue in %s", args.index)
        return True
    return False
