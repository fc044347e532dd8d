"""What one app serves with, and whether it is ready: the loaded model, the catalogue, the
calibration and the checkpoint check.

Loading happens once, in a thread started by the app's lifespan, so the server answers
`/healthz` (and `/readyz` with 503) while a large model or index is still loading. Routes
declare `RuntimeDep` (503 until loaded) or `AnyRuntimeDep` (any state).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from catalog import CatalogBackend, open_catalog
from model.calibration import Calibration, CalibrationError, calibration_path, find_calibration
from model.embedding import Embedder
from service.audio_files import AudioFiles
from service.checkpoint_check import CheckpointCheck
from service.errors import ApiError
from service.settings import Settings
from service.telemetry import Telemetry
from service.track_writes import ContentLocks
from service.upload_embedder import UploadEmbedder

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_calibration(checkpoint: Path, checkpoint_id: str) -> tuple[Calibration | None, str]:
    """The calibration beside the checkpoint, and a status line. A missing, stale or broken
    one leaves the service uncalibrated (it says so in /readyz and every answer), never
    failed."""
    path = calibration_path(checkpoint, checkpoint_id)
    try:
        calibration = find_calibration(checkpoint, checkpoint_id)
    except CalibrationError as err:
        return None, f"refused: {err}"
    if calibration is None:
        return None, (
            f"no calibration for checkpoint {checkpoint_id} ({path.name} absent): answers "
            "carry no verdict; fit one with `python -m model calibrate`"
        )
    return calibration, f"loaded {path.name} ({calibration.norm} scores)"


class Runtime:
    """Shared state of one app instance. `state` is 'loading', 'ready' or 'failed'."""

    def __init__(self, settings: Settings, telemetry: Telemetry):
        self.settings = settings
        self.telemetry = telemetry
        self.state = "loading"
        self.error: str | None = None
        self._embedder: Embedder | None = None
        self._catalog: CatalogBackend | None = None
        self._inference: UploadEmbedder | None = None
        self._checkpoints: CheckpointCheck | None = None
        # The loaded checkpoint's score calibration; None: answers carry no verdict.
        self.calibration: Calibration | None = None
        self.calibration_status = "not loaded"
        self.audio = AudioFiles(settings)
        self.content_locks = ContentLocks()
        self._register_gauges()

    # Routes reach these only once `ready_runtime` let them through.
    @property
    def embedder(self) -> Embedder:
        return _loaded(self._embedder, "the model")

    @property
    def catalog(self) -> CatalogBackend:
        return _loaded(self._catalog, "the catalogue")

    @property
    def inference(self) -> UploadEmbedder:
        return _loaded(self._inference, "the inference pool")

    @property
    def checkpoints(self) -> CheckpointCheck:
        return _loaded(self._checkpoints, "the checkpoint check")

    # -- loading -----------------------------------------------------------------------
    def load(self) -> None:
        """Load model and catalogue (blocking). Raises what loading raises."""
        from model import DEFAULT_CHECKPOINT

        s = self.settings
        start = time.perf_counter()
        embedder = Embedder.from_checkpoint(s.checkpoint, s.device)
        catalog = open_catalog(
            s.catalog_target,
            dim=embedder.embed_dim,
            index=s.index_kind,
            device=s.device,
            qdrant_api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
        )
        self._embedder, self._catalog = embedder, catalog
        self.audio.follow(catalog.roots)  # the folders the indexer indexed may be played
        self.calibration, self.calibration_status = load_calibration(
            s.checkpoint or DEFAULT_CHECKPOINT, embedder.checkpoint_id
        )
        if self.calibration is None:
            log.warning("calibration: %s", self.calibration_status)
        self._inference = UploadEmbedder(embedder, s, self.telemetry.observe_embedding)
        self._checkpoints = CheckpointCheck(catalog, embedder.checkpoint_id, self.catalog_call)
        self._checkpoints.read()
        if self._checkpoints.foreign:
            log.warning("%s", self._checkpoints.message())
        log.info(
            "loaded checkpoint %s on %s (decoding in %s) and catalogue %s in %.1f s",
            embedder.checkpoint_id,
            embedder.device,
            self._inference.describe(),
            s.catalog_target,
            time.perf_counter() - start,
        )
        self.state = "ready"

    async def load_in_background(self, on_failure: Callable[[BaseException], None] | None) -> None:
        try:
            await asyncio.to_thread(self.load)
        except Exception as err:
            self.state, self.error = "failed", f"{err.__class__.__name__}: {err}"
            log.error("loading the model or the catalogue failed: %s", self.error)
            if on_failure is not None:
                on_failure(err)

    def close(self) -> None:
        if self._inference is not None:
            self._inference.close()
        if self._catalog is not None:
            self._catalog.close()

    # -- readiness ---------------------------------------------------------------------
    def require_ready(self) -> None:
        """Raises ApiError 503 (`not_ready`, `load_failed`) unless loaded."""
        if self.state == "loading":
            raise ApiError(
                503,
                "not_ready",
                "the model and catalogue are still loading",
                headers={"Retry-After": "5"},
            )
        if self.state == "failed":
            raise ApiError(503, "load_failed", f"the service failed to load: {self.public_error}")

    @property
    def public_error(self) -> str | None:
        """The load error as clients see it: its class only, unless paths may be shown (the
        message names checkpoint and catalogue files)."""
        if self.error is None or self.settings.expose_paths:
            return self.error
        return f"{self.error.split(':', 1)[0]} (details in the server log)"

    async def readiness(self) -> dict:
        """The catalogue's stats once loaded and consistent (the checkpoints re-read now);
        raises ApiError 503 with `state` while loading, after a failed load, or while the
        catalogue holds vectors of another checkpoint (queries are refused then)."""
        if self.state != "ready":
            code = "not_ready" if self.state == "loading" else "load_failed"
            raise ApiError(503, code, self.public_error or "loading", state=self.state)
        await self.checkpoints.refresh()
        if self.checkpoints.foreign:
            msg = self.checkpoints.message()
            raise ApiError(503, "checkpoint_mismatch", msg, state=self.state)
        stats = await self.catalog_call(self.catalog.stats)
        if not self.settings.expose_paths:
            stats.pop("directory", None)  # where the data lives is nobody's business but the host's
        return stats

    async def catalog_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A catalogue operation (SQLite/FAISS, blocking) off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- gauges ------------------------------------------------------------------------
    def _register_gauges(self) -> None:
        t = self.telemetry
        t.gauge("singer_ready", "1 when model and catalogue are loaded.", self._ready)
        t.gauge("singer_inference_running", "Embeddings being computed now.", self._running)
        t.gauge("singer_inference_waiting", "Requests waiting for an inference slot.", self._queue)
        t.gauge("singer_catalog_tracks", "Tracks in the catalogue, by domain.", self._tracks)
        t.gauge("singer_catalog_singers", "Singers in the catalogue.", self._singers)

    def _ready(self) -> Iterable[tuple[dict[str, str], float]]:
        return [({}, float(self.state == "ready"))]

    def _running(self) -> Iterable[tuple[dict[str, str], float]]:
        return [({}, float(self._inference.pool.running if self._inference else 0))]

    def _queue(self) -> Iterable[tuple[dict[str, str], float]]:
        return [({}, float(self._inference.pool.waiting if self._inference else 0))]

    def _tracks(self) -> Iterable[tuple[dict[str, str], float]]:
        stats = self._catalog.stats() if self._catalog is not None else {}
        return [({"domain": d}, float(n)) for d, n in sorted(stats.get("n_tracks", {}).items())]

    def _singers(self) -> Iterable[tuple[dict[str, str], float]]:
        stats = self._catalog.stats() if self._catalog is not None else {}
        return [({}, float(stats["n_singers"]))] if "n_singers" in stats else []


def _loaded(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"{what} is not loaded")
    return value


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def ready_runtime(request: Request) -> Runtime:
    """The runtime, or 503 while the model and catalogue are not loaded."""
    runtime = get_runtime(request)
    runtime.require_ready()
    return runtime


# Dependency aliases the routes declare (as full-stack-fastapi-template's `SessionDep`).
RuntimeDep = Annotated[Runtime, Depends(ready_runtime)]
AnyRuntimeDep = Annotated[Runtime, Depends(get_runtime)]
