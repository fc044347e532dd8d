"""Service settings, read from `SINGER_*` environment variables (pydantic-settings).

Every variable is a field of `Settings` or of its `performance` sub-model (whose variables
keep their flat names: `SINGER_DECODE_PARTS`, not `SINGER_PERFORMANCE__...`). service/README.md
lists them all (tests/service/test_settings.py checks the table against these models);
`Settings()` with no environment gives the local-development defaults that `make run`
relies on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.audio import MAX_QUERY_SECONDS, MAX_TRACK_SECONDS

ENV_PREFIX = "SINGER_"


class Performance(BaseSettings):
    """Rarely changed performance knobs; unset, `service.performance` chooses for the
    machine (docs/performance.md: the measurements behind each choice)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads on CPU; empty: cores minus inference workers, "
        "at least 1 (more oversubscribes the cores the workers decode on)",
    )
    decode_processes: int | None = Field(
        None,
        ge=0,
        description="worker processes that decode uploads; 0: decode in the inference "
        "threads; empty: on CUDA as many as inference_workers (at most cores minus one), "
        "on CPU 0",
    )
    decode_parts: int | None = Field(
        None,
        ge=1,
        description="the most pieces one upload's decoding is split into, decoded at once on "
        "its share of the cores (cores / embeddings running; FLAC, WAV and AIFF; same "
        "samples), and on the CPU its features, voice detection and encoders too (as many "
        "pieces as that share leaves cores beside its torch threads); 1: never split; "
        "empty: the machine's cores",
    )


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
    max_pending: int = Field(
        64, ge=0, description="requests allowed to wait for an inference slot (503 beyond)"
    )
    audio_roots: Annotated[list[Path], NoDecode] = Field(
        [],
        description="directories whose catalogued files GET /tracks/{id}/audio may serve, "
        f"besides the folders the indexer indexed ('{os.pathsep}'-separated; a file's "
        "recorded link counts, so a library of symlinks plays)",
    )
    store_uploads: bool = Field(
        True,
        description="keep the audio of POST /tracks uploads in <index_dir>/audio (by content "
        "hash) so that the page can play them",
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
        description="upload slots: request bodies past 64 KiB received at the same time; "
        "others wait for a slot (503 too_many_uploads after 10 s)",
    )
    expose_paths: bool = Field(
        False,
        description="show full paths: track files in track answers, the catalogue directory and "
        "full load errors in /readyz (off: file names only, no disclosure)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="logging level of the service and uvicorn"
    )
    performance: Performance = Field(
        default_factory=Performance,
        description="performance knobs (their SINGER_* variables keep flat names)",
    )

    # -- connections and upload fairness (service.http_server, service.uploads) --
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="time a connection has to send a request's headers, from its start or "
        "its previous response (closed beyond: idle and slow-header sockets)",
    )
    max_connections: int = Field(
        1000,
        ge=8,
        description="open connections at most (lowered to fit the open-file limit); beyond, "
        "the longest-idle connection without a request in progress is closed",
    )
    upload_grace_s: float = Field(
        2.0,
        ge=0,
        description="seconds a request body may take to get going before "
        "min_upload_rate_kib applies",
    )
    min_upload_rate_kib: float = Field(
        4.0,
        ge=0,
        description="slowest average rate of a request body after the grace period, KiB/s "
        "(408 and close below it); 0: no floor",
    )
    max_uploads_per_client: int = Field(
        4,
        ge=1,
        description="upload slots one client address may hold at once (its other bodies wait)",
    )
    upload_reserve: int = Field(
        4,
        ge=0,
        description="upload slots kept for bodies that arrive fast (64 KiB within the grace "
        "period), so slow uploads cannot take every slot",
    )
    catalog_poll_s: float = Field(
        2.0,
        gt=0,
        description="how often the service checks whether a migration (python -m indexer "
        "migrate) made another catalogue generation live, seconds; it then loads that "
        "generation's checkpoint and swaps model and catalogue without a restart",
    )
    likely_false_alarm: float = Field(
        0.10,
        gt=0.0,
        lt=1.0,
        description="looser operating point of the /identify verdict: wanted share of queries "
        "by singers outside the catalogue answered 'known' or 'likely' (docs/open-set.md)",
    )
    exclude_outliers: bool = Field(
        False,
        description="leave the tracks flagged as outliers of their singer (far from the "
        "singer's other tracks: a wrong label, a featured artist) out of the singer models "
        "that /identify ranks; GET /singers/{id} lists them either way",
    )

    @model_validator(mode="before")
    @classmethod
    def _nest_performance(cls, data: Any) -> Any:
        """`Settings(decode_parts=3)` as the environment gives it: the performance fields
        given flat go into the sub-model (the rest of it still read from the environment)."""
        if not isinstance(data, dict):
            return data
        flat = {k: data[k] for k in Performance.model_fields if k in data}
        if not flat:
            return data
        nested = data.get("performance") or {}
        if isinstance(nested, Performance):
            nested = nested.model_dump(exclude_unset=True)
        rest = {k: v for k, v in data.items() if k not in flat}
        return {**rest, "performance": Performance(**{**nested, **flat})}

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


def env_fields() -> Iterator[tuple[str, FieldInfo]]:
    """(`SINGER_*` name, field) of every setting, the performance sub-model's included."""
    for name, field in Settings.model_fields.items():
        if name == "performance":
            for sub, sub_field in Performance.model_fields.items():
                yield f"{ENV_PREFIX}{sub.upper()}", sub_field
        else:
            yield f"{ENV_PREFIX}{name.upper()}", field
