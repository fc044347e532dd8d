"""`POST /identify`: who is singing this recording?"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile

from service import queries
from service.runtime import RuntimeDep
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


@router.post("/identify", response_model=IdentifyResponse, responses=UPLOAD_ERRORS)
async def identify(
    file: Annotated[UploadFile, File(description="the recording (any supported format)")],
    runtime: RuntimeDep,
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
    answer a `verdict` ("known" at the SINGER_TARGET_FALSE_ALARM operating point, "likely" at
    SINGER_LIKELY_FALSE_ALARM, else "unknown") with the singing it rests on;
    `segments` show which seconds matched whom."""
    found = await queries.identify(
        runtime,
        await read_upload(file),
        top_k=top_k,
        domain=domain,
        models=models,
        with_timeline=timeline_,
    )
    emb, reading = found.embedding, found.reading
    return IdentifyResponse(
        **QueryInfo.of(emb, domain, runtime.embedder.checkpoint_id),
        models_domain=found.models_domain,
        singers=[
            SingerHitOut.of_hit(h, c) for h, c in zip(found.hits, reading.confidence, strict=True)
        ],
        verdict=reading.verdict,
        calibrated=runtime.calibration is not None,
        threshold=reading.threshold,
        target_false_alarm=runtime.settings.target_false_alarm,
        likely_threshold=reading.likely_threshold,
        likely_false_alarm=runtime.settings.likely_false_alarm,
        singing_s=emb.n_segments * runtime.embedder.features.segment_seconds,
        firm_answer_s=reading.firm_answer_s,
        voiced_fraction=emb.voiced_fraction,
        segments=[
            SegmentOut(start_s=g.start_s, end_s=g.end_s, singer=g.singer, score=g.score)
            for g in found.segments
        ],
        timeline=None if found.timeline is None else [SpanOut(**vars(s)) for s in found.timeline],
    )
