"""Service settings, read from `SINGER_*` environment variables (pydantic-settings).

Every field is documented in service/README.md; `Settings()` with no environment gives the
local-development defaults that `make run` relies on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.audio import MAX_QUERY_SECONDS, MAX_TRACK_SECONDS


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
    target_false_alarm: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="operating point of the /identify verdict: wanted share of queries by "
        "singers outside the catalogue answered 'known'",
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
    decode_processes: int | None = Field(
        None,
        ge=0,
        description="worker processes that decode uploads (threads of one process queue on "
        "the GIL once there are many cores); 0: decode in the inference threads; empty: on "
        "CUDA as many as inference_workers (at most cores minus one), on CPU 0 (measured "
        "faster on 2 cores)",
    )
    decode_parts: int | None = Field(
        None,
        ge=1,
        description="the most pieces one upload's decoding is split into, decoded at once on "
        "its share of the cores (cores / embeddings running; FLAC, WAV and AIFF; same "
        "samples); 1: never split; empty: the machine's cores",
    )
    max_pending: int = Field(
        64, ge=0, description="requests allowed to wait for an inference slot (503 beyond)"
    )
    audio_roots: Annotated[list[Path], NoDecode] = Field(
        [],
        description="directories whose catalogued files GET /tracks/{id}/audio may serve "
        f"('{os.pathsep}'-separated; symlinks leading out of them are refused)",
    )
    store_uploads: bool = Field(
        True,
        description="keep the audio of POST /tracks uploads in <index_dir>/audio (by content "
        "hash) so that the page can play them",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads on CPU; empty: cores minus inference workers, "
        "at least 1 (more oversubscribes the cores the workers decode on)",
    )
    batching: Literal["auto", "on", "off"] = Field(
        "auto",
        description="run the segments of concurrent requests through the encoders together; "
        "auto: off (measured: no gain on CPU; on an H100 with the fused default, a higher p99 "
        "at 8 clients, more throughput only when overloaded)",
    )
    batch_max_segments: int = Field(
        64, ge=1, description="most segments in one cross-request forward pass"
    )
    batch_max_wait_ms: float | None = Field(
        None,
        ge=0,
        description="longest a request's segments wait for others to join its batch; "
        "empty: 5 ms on CUDA, 0 on CPU (only requests already queued join)",
    )
    batch_features: Literal["auto", "on", "off"] = Field(
        "auto",
        description="with batching, also choose the segments of concurrent requests together "
        "(log-mel and voice detector over all their audio in one pass); auto: on CUDA, where "
        "one request's features are a string of small kernel launches",
    )
    max_query_seconds: float = Field(
        MAX_QUERY_SECONDS,
        gt=0,
        description="longest decoded audio of /identify and /search, seconds (422 beyond)",
    )
    max_track_seconds: float = Field(
        MAX_TRACK_SECONDS,
        gt=0,
        description="longest decoded audio of POST /tracks, seconds (422 beyond)",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="time allowed to receive a request body, seconds (408 and close beyond)",
    )
    max_concurrent_uploads: int = Field(
        16,
        ge=1,
        description="request bodies received at the same time (503 at once beyond)",
    )
    expose_paths: bool = Field(
        False,
        description="show filesystem paths and load errors in /readyz (off: no disclosure)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="logging level of the service and uvicorn"
    )

    @field_validator("api_key", "checkpoint", "catalog", "qdrant_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker-compose passes `SINGER_API_KEY=` for an unset variable: treat it as absent.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("audio_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

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
    def upload_store(self) -> Path:
        """Where POST /tracks keeps uploaded audio (when `store_uploads`)."""
        return self.index_dir / "audio"

    @property
    def writes_enabled(self) -> bool:
        return self.api_key is not None or self.allow_unauthenticated_writes
