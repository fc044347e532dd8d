"""`POST /search`: which tracks sound like the singer of this recording?"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile

from service import queries
from service.cursors import decode_cursor, encode_cursor
from service.errors import ApiError
from service.runtime import RuntimeDep
from service.schemas import (
    MAX_TOP_K,
    UPLOAD_ERRORS,
    QueryDomain,
    QueryInfo,
    SearchResponse,
    TrackHitOut,
)
from service.uploads import read_upload

router = APIRouter(tags=["query"])


@router.post("/search", response_model=SearchResponse, responses=UPLOAD_ERRORS)
async def search(
    file: Annotated[UploadFile, File(description="the query recording (any supported format)")],
    runtime: RuntimeDep,
    top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K, description="tracks per page")] = 10,
    domain: Annotated[
        QueryDomain,
        Form(
            description="domain of the query; auto: mixed when the voice detector hears "
            "mostly accompaniment, else mono"
        ),
    ] = "mono",
    target: Annotated[
        Literal["mono", "mixed", "any"],
        Form(
            description="domain of the tracks to search; when it holds no track, the other "
            "domain is searched and `note` says so"
        ),
    ] = "mixed",
    singer: Annotated[
        str | None, Form(description="only this singer's tracks", examples=["amy"])
    ] = None,
    min_score: Annotated[
        float | None,
        Form(ge=-1.0, le=1.0, description="only tracks with at least this cosine score"),
    ] = None,
    cursor: Annotated[
        str | None, Form(description="next_cursor of the previous page (same file and filters)")
    ] = None,
) -> SearchResponse:
    """Rank catalogue tracks by cosine similarity of their vector to the upload's."""
    offset = decode_cursor(cursor) if cursor else 0
    if offset + top_k > MAX_TOP_K * 100:
        raise ApiError(422, "bad_cursor", f"pages end at {MAX_TOP_K * 100} results")
    found = await queries.search(
        runtime,
        await read_upload(file),
        domain=domain,
        target=target,
        offset=offset,
        top_k=top_k,
        singer=singer,
        min_score=min_score,
    )
    expose = runtime.settings.expose_paths
    unavailable = [runtime.audio.unavailable(h.track) for h in found.tracks]
    return SearchResponse(
        **QueryInfo.of(found.embedding, domain, runtime.embedder.checkpoint_id),
        target=target,
        searched=found.searched,
        note=found.note,
        tracks=[
            TrackHitOut.of_hit(
                h,
                why is None,
                unavailable=why,
                expose_paths=expose,
                display=runtime.audio.display_path,
            )
            for h, why in zip(found.tracks, unavailable, strict=True)
        ],
        next_cursor=None if found.next_offset is None else encode_cursor(found.next_offset),
    )
