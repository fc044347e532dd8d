"""`GET /healthz` (process up), `GET /readyz` (model and catalogue loaded), `GET /metrics`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from service.deps import get_runtime
from service.errors import error_response
from service.metrics import CONTENT_TYPE
from service.runtime import Runtime
from service.schemas import ErrorOut, Ready

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorOut}})
async def readyz(runtime: Annotated[Runtime, Depends(get_runtime)]) -> JSONResponse:
    """200 once model and catalogue are loaded; 503 while loading, after a failed load, or
    while the catalogue holds vectors of another checkpoint (queries are refused then)."""
    if runtime.state != "ready":
        code = "not_ready" if runtime.state == "loading" else "load_failed"
        return error_response(503, code, runtime.public_error or "loading", state=runtime.state)
    await runtime.refresh_checkpoints()
    if runtime.foreign_checkpoints:
        return error_response(
            503, "checkpoint_mismatch", runtime.checkpoint_mismatch_message(), state=runtime.state
        )
    stats = await runtime.catalog_call(runtime.catalog.stats)
    if not runtime.settings.expose_paths:
        stats.pop("directory", None)  # where the data lives is nobody's business but the host's
    return JSONResponse(
        Ready(
            status="ready",
            checkpoint_id=runtime.embedder.checkpoint_id,
            device=str(runtime.embedder.device),
            catalog=stats,
            calibrated=runtime.calibration is not None,
            calibration=runtime.calibration_status,
        ).model_dump(mode="json")
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(runtime: Annotated[Runtime, Depends(get_runtime)]) -> PlainTextResponse:
    """Prometheus text format: request counts and latencies, embedding time, catalogue size."""
    text = await runtime.catalog_call(runtime.metrics.render)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
