"""Service settings, read from `SINGER_*` environment variables (pydantic-settings).

Every field is documented in service/README.md; `Settings()` with no environment gives the
local-development defaults that `make run` relies on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration of the HTTP service. Sizes in MiB, times in seconds."""

    model_config = SettingsConfigDict(env_prefix="SINGER_", extra="ignore")

    host: str = Field("127.0.0.1", description="interface uvicorn binds (0.0.0.0 in Docker)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    index_dir: Path = Field(
        Path("data/index"), description="catalogue directory (SQLite + FAISS); created if absent"
    )
    catalog: str | None = Field(
        None,
        description="catalogue URL instead of index_dir: qdrant://HOST:6333/NAME (shared by "
        "replicas), qdrant+local:///DIR, qdrant+memory://NAME; empty: index_dir (SQLite+FAISS)",
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server")
    index_kind: Literal["flat", "hnsw"] = Field("flat", description="FAISS index: exact or HNSW")
    checkpoint: Path | None = Field(
        None, description="model checkpoint; empty: the bundled default (model.DEFAULT_CHECKPOINT)"
    )
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda[:N]'")
    api_key: SecretStr | None = Field(
        None, description="key required in the X-API-Key header of write endpoints"
    )
    allow_unauthenticated_writes: bool = Field(
        False, description="with no api_key, accept writes anyway (local use only)"
    )
    max_upload_mb: float = Field(
        50.0, gt=0, description="largest request body accepted, in MiB (413 beyond)"
    )
    inference_workers: int = Field(
        2, ge=1, description="embeddings computed at the same time (threads)"
    )
    max_pending: int = Field(
        64, ge=0, description="requests allowed to wait for an inference slot (503 beyond)"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="logging level of the service and uvicorn"
    )

    @field_validator("api_key", "checkpoint", "catalog", "qdrant_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker-compose passes `SINGER_API_KEY=` for an unset variable: treat it as absent.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("catalog")
    @classmethod
    def _check_catalog(cls, value: str | None) -> str | None:
        from catalog.factory import QDRANT_SCHEMES, is_url

        if value is not None and not is_url(value):
            raise ValueError(f"catalog must be a URL with scheme {', '.join(QDRANT_SCHEMES)}")
        return value

    @property
    def catalog_target(self) -> str | Path:
        """Where the catalogue lives: the `catalog` URL, else `index_dir`."""
        return self.catalog or self.index_dir

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def writes_enabled(self) -> bool:
        return self.api_key is not None or self.allow_unauthenticated_writes
