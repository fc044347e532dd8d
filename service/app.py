"""The FastAPI application: `create_app(settings)`; nothing is loaded at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from service.deps import checked_parameters
from service.errors import install_error_handlers
from service.routers import health, identify, pages, playback, search, singers, tracks
from service.runtime import Runtime
from service.schemas import COMMON_ERRORS
from service.settings import Settings
from service.telemetry import RequestMetrics, Telemetry
from service.uploads import BodyLimits, keep_uploads_in_memory

DESCRIPTION = """Who is singing? Singer identification (`/identify`) and query-by-singer track
search (`/search`) over an embedded catalogue, with the CROSS model of Lee & Nam (ISMIR 2019).
Write endpoints need the `X-API-Key` header when the service has a key configured."""


def create_app(
    settings: Settings | None = None,
    *,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app. The lifespan loads model and catalogue in a background thread
    (`/readyz` answers 503 until then); `on_load_failure` is called if that fails."""
    settings = settings or Settings()
    telemetry = Telemetry()
    runtime = Runtime(settings, telemetry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(runtime.load_in_background(on_load_failure))
        following = asyncio.create_task(runtime.follow_migrations())  # service/catalog_swap.py
        try:
            yield
        finally:
            following.cancel()
            await loading  # the loader thread cannot be interrupted; let it finish first
            runtime.close()

    # /docs and /redoc with their scripts served from the fastapi-offline package (no CDN).
    app: FastAPI = FastAPIOffline(
        title="Singer retrieval",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(checked_parameters)],
        responses=COMMON_ERRORS,  # the shared error shape, documented on every route
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    # Outermost last: metrics see every response, the 413/408/503s of the body limits included.
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_upload_bytes,
        timeout_s=settings.body_timeout_s,
        max_concurrent=settings.max_concurrent_uploads,
        grace_s=settings.upload_grace_s,
        min_rate=settings.min_upload_rate_kib * 1024,
        per_client=settings.max_uploads_per_client,
        reserve=settings.upload_reserve,
    )
    keep_uploads_in_memory(settings.max_upload_bytes)
    app.add_middleware(RequestMetrics, telemetry=telemetry)
    for module in (identify, search, singers, tracks, playback, health, pages):
        app.include_router(module.router)
    app.include_router(tracks.write_router)
    app.mount("/static", pages.static_files, name="static")
    return app
