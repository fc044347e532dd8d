"""`POST /search`: which tracks sound like the singer of this recording?"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from catalog import TrackHit
from service.cursors import decode_cursor, encode_cursor
from service.deps import ready_runtime
from service.errors import ApiError
from service.runtime import Runtime
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
    runtime: Annotated[Runtime, Depends(ready_runtime)],
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
    await runtime.require_consistent_catalog()
    offset = decode_cursor(cursor) if cursor else 0
    if offset + top_k > MAX_TOP_K * 100:
        raise ApiError(422, "bad_cursor", f"pages end at {MAX_TOP_K * 100} results")
    emb = await runtime.embed(await read_upload(file), domain)
    catalog = runtime.catalog

    def find() -> tuple[Literal["mono", "mixed", "any"], str | None, list[TrackHit]]:
        # One trip to a worker thread for the domain check and the search (see /identify).
        searched: Literal["mono", "mixed", "any"] = target
        note: str | None = None
        if target != "any":
            counts = catalog.stats()["n_tracks"]
            other: Literal["mono", "mixed"] = "mono" if target == "mixed" else "mixed"
            if counts.get(target, 0) == 0:
                if counts.get(other, 0):
                    searched = other
                    note = f"the catalogue holds no {target} track; searched the {other} tracks"
                else:
                    note = "the catalogue is empty"
        # One more than the page tells whether a next page exists.
        hits = catalog.search_tracks(
            emb.vector,
            offset + top_k + 1,
            None if searched == "any" else searched,
            singer=singer,
            min_score=min_score,
        )
        return searched, note, hits

    searched, note, hits = await runtime.catalog_call(find)
    page = hits[offset : offset + top_k]
    if not hits and note is None and (singer is not None or min_score is not None):
        note = "no track passes the filters"
    return SearchResponse(
        **QueryInfo.of(emb, domain, runtime.embedder.checkpoint_id),
        target=target,
        searched=searched,
        note=note,
        tracks=[TrackHitOut.of_hit(h, runtime.audio.playable(h.track)) for h in page],
        next_cursor=encode_cursor(offset + top_k) if len(hits) > offset + top_k else None,
    )
