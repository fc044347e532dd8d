"""`GET /healthz` (process up), `GET /readyz` (model and catalogue loaded), `GET /metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.runtime import AnyRuntimeDep
from service.schemas import ErrorOut, Ready
from service.telemetry import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorOut}})
async def readyz(runtime: AnyRuntimeDep) -> Ready:
    """200 once model and catalogue are loaded; 503 while loading, after a failed load, or
    while the catalogue holds vectors of another checkpoint (queries are refused then)."""
    stats = await runtime.readiness()
    return Ready(
        status="ready",
        checkpoint_id=runtime.embedder.checkpoint_id,
        device=str(runtime.embedder.device),
        catalog=stats,
        calibrated=runtime.calibration is not None,
        calibration=runtime.calibration_status,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(runtime: AnyRuntimeDep) -> Response:
    """Prometheus text format: request counts and latencies, embedding time, inference queue,
    catalogue size, process memory."""
    body = await runtime.catalog_call(runtime.telemetry.render)  # gauges read the catalogue
    return Response(body, media_type=CONTENT_TYPE)
