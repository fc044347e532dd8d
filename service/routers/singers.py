"""`GET /singers`: the catalogue's singers, paginated; `GET /singers/{id}`: one singer and the
reliability of their singer models (`service.enrolment`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.enrolment import find_singer, singer_enrolment
from service.errors import ApiError
from service.runtime import RuntimeDep
from service.schemas import ErrorOut, SingerOut, SingersPage
from service.singer_schemas import SingerDetail, SingerModelOut

router = APIRouter(tags=["catalogue"])
MAX_OFFSET = 2**31 - 1  # far beyond any catalogue, far below SQLite's 64-bit integers


@router.get("/singers", response_model=SingersPage)
async def list_singers(
    runtime: RuntimeDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SingersPage:
    total, page = await runtime.catalog_call(runtime.catalog.list_singers, offset, limit)
    return SingersPage(
        total=total, offset=offset, limit=limit, singers=[SingerOut.of(s) for s in page]
    )


@router.get(
    "/singers/{singer_id}",
    response_model=SingerDetail,
    responses={404: {"model": ErrorOut, "description": "no singer with this id"}},
)
async def get_singer(
    runtime: RuntimeDep, singer_id: Annotated[int, Path(ge=1, le=MAX_OFFSET)]
) -> SingerDetail:
    """A singer's models: tracks, voiced minutes, spread, and the tracks that do not fit."""
    catalog, cal, settings = runtime.catalog, runtime.calibration, runtime.settings
    segment_s = runtime.embedder.features.segment_seconds

    def read() -> tuple:
        singer = find_singer(catalog, singer_id)
        return singer, singer_enrolment(catalog, singer, cal, segment_s) if singer else []

    singer, models = await runtime.catalog_call(read)
    if singer is None:
        raise ApiError(404, "singer_not_found", f"no singer with id {singer_id}")
    return SingerDetail(
        **SingerOut.of(singer).model_dump(),
        models=[
            SingerModelOut.of(m, settings.exclude_outliers, settings.expose_paths) for m in models
        ],
    )
