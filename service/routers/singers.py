"""`GET /singers`: the catalogue's singers, paginated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.runtime import RuntimeDep
from service.schemas import SingerOut, SingersPage

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
