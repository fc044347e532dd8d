"""`POST /search`: which tracks sound like the singer of this recording?"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.deps import ready_runtime
from service.runtime import Runtime
from service.schemas import MAX_TOP_K, UPLOAD_ERRORS, Domain, Quality, SearchResponse, TrackHitOut
from service.uploads import read_upload

router = APIRouter(tags=["query"])


@router.post("/search", response_model=SearchResponse, responses=UPLOAD_ERRORS)
async def search(
    file: Annotated[UploadFile, File(description="the query recording (any supported format)")],
    runtime: Annotated[Runtime, Depends(ready_runtime)],
    top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K)] = 10,
    domain: Annotated[Domain, Form(description="domain of the query")] = "mono",
    target: Annotated[
        Literal["mono", "mixed", "any"], Form(description="domain of the tracks to search")
    ] = "mixed",
) -> SearchResponse:
    """Rank catalogue tracks by cosine similarity of their vector to the upload's."""
    await runtime.require_consistent_catalog()
    emb = await runtime.embed(await read_upload(file), domain)
    hits = await runtime.catalog_call(
        runtime.catalog.search_tracks, emb.vector, top_k, None if target == "any" else target
    )
    return SearchResponse(
        domain=domain,
        target=target,
        n_segments=emb.n_segments,
        duration_s=emb.duration_s,
        checkpoint_id=runtime.embedder.checkpoint_id,
        quality=Quality.of(emb),
        tracks=[TrackHitOut.of_hit(h) for h in hits],
    )
