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
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from catalog import CatalogBackend, open_catalog
from catalog.records import GenerationInfo
from model.calibration import Calibration, CalibrationError, calibration_path, find_calibration
from model.embedding import Embedder
from service.audio_files import AudioFiles
from service.catalog_swap import GenerationFollower, Serving, ServingSlot
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
    kinds = ", ".join(f"{k} {norm}" for k, norm in calibration.norms().items())
    return calibration, f"loaded {path.name} (scores: {kinds})"


class Runtime:
    """Shared state of one app instance. `state` is 'loading', 'ready' or 'failed'."""

    def __init__(self, settings: Settings, telemetry: Telemetry):
        self.settings = settings
        self.telemetry = telemetry
        self.state = "loading"
        self.error: str | None = None
        # Model, catalogue and what derives from them; a migration swaps them together, and
        # each request is pinned to the set it started with (service/catalog_swap.py).
        self.serving = ServingSlot()
        self.follower: GenerationFollower | None = None
        self.audio = AudioFiles(settings)
        self.content_locks = ContentLocks()
        self._register_gauges()

    # Routes reach these only once `ready_runtime` let them through.
    @property
    def _serving(self) -> Serving:
        return _loaded(self.serving.current, "the model and catalogue")

    @property
    def embedder(self) -> Embedder:
        return self._serving.embedder

    @property
    def catalog(self) -> CatalogBackend:
        return self._serving.catalog

    @property
    def inference(self) -> UploadEmbedder:
        return self._serving.inference

    @property
    def checkpoints(self) -> CheckpointCheck:
        return self._serving.checkpoints

    @property
    def calibration(self) -> Calibration | None:
        """The checkpoint's score calibration; None: answers carry no verdict."""
        current = self.serving.current
        return current.calibration if current else None

    @property
    def calibration_status(self) -> str:
        current = self.serving.current
        return current.calibration_status if current else "not loaded"

    # -- loading -----------------------------------------------------------------------
    def load(self) -> None:
        """Load model and catalogue (blocking). Raises what loading raises."""
        start = time.perf_counter()
        serving = self.build_serving(None, None)
        self.serving.install(serving)
        self.audio.follow(serving.catalog.roots)  # the folders indexed may be played
        self.follower = GenerationFollower(
            self.serving, self._build_and_follow, self.settings.catalog_poll_s
        )
        log.info(
            "loaded checkpoint %s on %s (decoding in %s) and catalogue %s in %.1f s",
            serving.embedder.checkpoint_id,
            serving.embedder.device,
            serving.inference.describe(),
            self.settings.catalog_target,
            time.perf_counter() - start,
        )
        self.state = "ready"

    def build_serving(self, generation: str | None, current: Serving | None) -> Serving:
        """Open a catalogue generation (None: the live one) and the model it was built with
        (blocking). The checkpoint is SINGER_CHECKPOINT's unless a migration recorded
        another in the generation; `current`'s model is shared when it is the same."""
        from model import DEFAULT_CHECKPOINT

        s = self.settings

        def open_it(name: str | None, dim: int | None) -> CatalogBackend:
            if current is not None:
                return current.catalog.open_generation(name or "", dim=dim)
            return open_catalog(
                s.catalog_target,
                dim=dim,
                index=s.index_kind,
                device=s.device,
                qdrant_api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
            )

        catalog = open_it(generation, None)
        try:
            info = catalog.generation()
            checkpoint = _built_with(info) or s.checkpoint or DEFAULT_CHECKPOINT
            if current is not None and current.embedder.checkpoint_id == info.checkpoint_id:
                embedder, inference, owns = current.embedder, current.inference, False
            else:
                embedder = Embedder.from_checkpoint(checkpoint, s.device)
                inference, owns = None, True
            if catalog.dim != embedder.embed_dim:  # an empty catalogue takes the model's
                catalog.close()
                catalog = open_it(info.name, embedder.embed_dim)
        except BaseException:
            catalog.close()
            raise
        calibration, status = load_calibration(Path(checkpoint), embedder.checkpoint_id)
        if calibration is None:
            log.warning("calibration: %s", status)
        if inference is None:
            inference = UploadEmbedder(embedder, s, self.telemetry.observe_embedding)
        checkpoints = CheckpointCheck(catalog, embedder.checkpoint_id, self.catalog_call)
        checkpoints.read()
        if checkpoints.foreign:
            log.warning("%s", checkpoints.message())
        return Serving(
            embedder, catalog, inference, checkpoints, calibration, status, info.name, owns
        )

    def _build_and_follow(self, generation: str, current: Serving) -> Serving:
        serving = self.build_serving(generation, current)
        self.audio.follow(serving.catalog.roots)
        return serving

    async def follow_migrations(self) -> None:
        """Once loaded, follow the catalogue's live generation until cancelled."""
        while self.state == "loading":
            await asyncio.sleep(0.2)
        if self.follower is not None:
            await self.follower.run()

    async def load_in_background(self, on_failure: Callable[[BaseException], None] | None) -> None:
        try:
            await asyncio.to_thread(self.load)
        except Exception as err:
            self.state, self.error = "failed", f"{err.__class__.__name__}: {err}"
            log.error("loading the model or the catalogue failed: %s", self.error)
            if on_failure is not None:
                on_failure(err)

    def close(self) -> None:
        self.serving.close()

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
        now = self.serving.now
        return [({}, float(now.inference.pool.running if now else 0))]

    def _queue(self) -> Iterable[tuple[dict[str, str], float]]:
        now = self.serving.now
        return [({}, float(now.inference.pool.waiting if now else 0))]

    def _tracks(self) -> Iterable[tuple[dict[str, str], float]]:
        now = self.serving.now
        stats = now.catalog.stats() if now is not None else {}
        return [({"domain": d}, float(n)) for d, n in sorted(stats.get("n_tracks", {}).items())]

    def _singers(self) -> Iterable[tuple[dict[str, str], float]]:
        now = self.serving.now
        stats = now.catalog.stats() if now is not None else {}
        return [({}, float(stats["n_singers"]))] if "n_singers" in stats else []


def _built_with(info: GenerationInfo) -> Path | None:
    """The checkpoint file a migration built this generation with, when it is recorded and
    readable here (else SINGER_CHECKPOINT is loaded: if it is another checkpoint, queries get
    409 checkpoint_mismatch, which names both)."""
    if not (info.checkpoint_id and info.checkpoint_file):
        return None
    path = Path(info.checkpoint_file)
    if not path.is_file():
        log.warning(
            "generation %r was built with checkpoint %s from %s, which this machine cannot "
            "read; mount it at that path",
            info.name,
            info.checkpoint_id,
            path,
        )
        return None
    return path


def _loaded(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"{what} is not loaded")
    return value


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def ready_runtime(request: Request) -> AsyncIterator[Runtime]:
    """The runtime, or 503 while the model and catalogue are not loaded. The request is
    pinned to the model and catalogue installed now, until it ends."""
    runtime = get_runtime(request)
    runtime.require_ready()
    with runtime.serving.pinned():
        yield runtime


# Dependency aliases the routes declare (as full-stack-fastapi-template's `SessionDep`).
RuntimeDep = Annotated[Runtime, Depends(ready_runtime)]
AnyRuntimeDep = Annotated[Runtime, Depends(get_runtime)]
