"""`POST /identify`: who is singing this recording?"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from catalog import SingerHit
from service.deps import ready_runtime
from service.openset import HitReading, SegmentEvidence, read_hits, segment_evidence, timeline
from service.runtime import Runtime
from service.schemas import (
    MAX_TOP_K,
    UPLOAD_ERRORS,
    IdentifyResponse,
    QueryDomain,
    QueryInfo,
    SegmentOut,
    SingerHitOut,
    SpanOut,
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
        QueryDomain,
        Form(
            description="mono: karaoke or vocal recording; mixed: a finished song; auto: "
            "mixed when the voice detector hears mostly accompaniment, else mono"
        ),
    ] = "mono",
    models: Annotated[
        Literal["auto", "mono", "mixed"],
        Form(
            description="singer models to rank; auto: the query's domain when the catalogue "
            "holds tracks in it, else the other domain"
        ),
    ] = "auto",
    timeline_: Annotated[
        bool,
        Form(
            alias="timeline",
            description="also answer who sings when: the voiced segments' answers, merged "
            "into spans (for a concert, medley or duet)",
        ),
    ] = False,
) -> IdentifyResponse:
    """Rank the catalogue's singers by cosine similarity of their singer model to the upload.

    With a calibration for the loaded checkpoint, each hit carries a `confidence` and the
    answer a `verdict` ("known" / "unknown" at the SINGER_TARGET_FALSE_ALARM operating point);
    `segments` show which seconds matched whom."""
    await runtime.require_consistent_catalog()
    emb = await runtime.embed(await read_upload(file), domain)
    branch = emb.domain or domain  # with auto: the branch the voice detector chose
    cal, target_fa = runtime.calibration, runtime.settings.target_false_alarm
    catalog = runtime.catalog

    def rank() -> tuple[list[SingerHit], str | None, HitReading, list[SegmentEvidence]]:
        # One trip to a worker thread for all the catalogue work: on a busy machine every
        # hand-off between the event loop and a thread waits for a core.
        hits: list[SingerHit] = []
        models_domain = None
        for candidate in [branch, OTHER[branch]] if models == "auto" else [models]:
            hits = catalog.search_singers(emb.vector, top_k, candidate)
            if hits:
                models_domain = candidate
                break
        reading = read_hits(
            catalog, emb.vector, hits, branch, models_domain, cal, target_fa, emb.n_segments
        )
        segments = segment_evidence(catalog, emb, branch, models_domain, cal, target_fa)
        return hits, models_domain, reading, segments

    hits, models_domain, reading, segments = await runtime.catalog_call(rank)
    return IdentifyResponse(
        **QueryInfo.of(emb, domain, runtime.embedder.checkpoint_id),
        models_domain=models_domain,
        singers=[SingerHitOut.of_hit(h, c) for h, c in zip(hits, reading.confidence, strict=True)],
        verdict=reading.verdict,
        calibrated=cal is not None,
        threshold=reading.threshold,
        target_false_alarm=target_fa,
        voiced_fraction=emb.voiced_fraction,
        segments=[
            SegmentOut(start_s=g.start_s, end_s=g.end_s, singer=g.singer, score=g.score)
            for g in segments
        ],
        timeline=[SpanOut(**vars(sp)) for sp in timeline(segments)] if timeline_ else None,
    )
