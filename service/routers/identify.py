"""`POST /identify`: who is singing this recording?"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.deps import ready_runtime
from service.runtime import Runtime
from service.schemas import (
    MAX_TOP_K,
    UPLOAD_ERRORS,
    Domain,
    IdentifyResponse,
    Quality,
    SingerHitOut,
)
from service.uploads import read_upload

router = APIRouter(tags=["query"])
OTHER = {"mono": "mixed", "mixed": "mono"}


@router.post("/identify", response_model=IdentifyResponse, responses=UPLOAD_ERRORS)
async def identify(
    file: Annotated[UploadFile, File(description="the recording (any supported format)")],
    runtime: Annotated[Runtime, Depends(ready_runtime)],
    top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K)] = 5,
    domain: Annotated[
        Domain, Form(description="mono: karaoke or vocal recording; mixed: a finished song")
    ] = "mono",
    models: Annotated[
        Literal["auto", "mono", "mixed"],
        Form(
            description="singer models to rank; auto: the query's domain when the catalogue "
            "holds tracks in it, else the other domain"
        ),
    ] = "auto",
) -> IdentifyResponse:
    """Rank the catalogue's singers by cosine similarity of their singer model to the upload."""
    await runtime.require_consistent_catalog()
    emb = await runtime.embed(await read_upload(file), domain)
    hits, models_domain = [], None
    for candidate in [domain, OTHER[domain]] if models == "auto" else [models]:
        hits = await runtime.catalog_call(
            runtime.catalog.search_singers, emb.vector, top_k, candidate
        )
        if hits:
            models_domain = candidate
            break
    return IdentifyResponse(
        domain=domain,
        models_domain=models_domain,
        n_segments=emb.n_segments,
        duration_s=emb.duration_s,
        checkpoint_id=runtime.embedder.checkpoint_id,
        quality=Quality.of(emb),
        singers=[SingerHitOut.of_hit(h) for h in hits],
    )
