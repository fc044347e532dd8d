"""`GET /tracks`, `GET /tracks/{id}`, `POST /tracks`, `DELETE /tracks/{id}`: catalogue entries.

Writes go through `WriteRoute` (API key checked before the body is read) and return only
after the catalogue has committed them, so a 2xx write survives a crash.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Response, Security, UploadFile
from starlette.concurrency import run_in_threadpool

from catalog.hashing import content_hash
from model.domains import DOMAINS
from service.deps import WriteRoute, api_key_scheme, ready_runtime
from service.errors import ApiError
from service.runtime import Runtime
from service.schemas import (
    UPLOAD_ERRORS,
    Domain,
    ErrorOut,
    Quality,
    TrackAdded,
    TrackOut,
    TracksPage,
)
from service.uploads import read_upload

router = APIRouter(tags=["catalogue"])
write_router = APIRouter(
    tags=["catalogue"],
    route_class=WriteRoute,
    dependencies=[Security(api_key_scheme)],
    responses={
        401: {"model": ErrorOut, "description": "missing or wrong X-API-Key"},
        403: {"model": ErrorOut, "description": "writes disabled (no key configured)"},
    },
)
TrackId = Annotated[int, Path(ge=1, le=2**63 - 1, description="catalogue track id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no track with this id"}
}


def _stem(filename: str | None) -> str | None:
    """Default title: the uploaded file's name without extension."""
    return (PurePath(filename).stem[:500] or None) if filename else None


@router.get("/tracks", response_model=TracksPage)
async def list_tracks(
    runtime: Annotated[Runtime, Depends(ready_runtime)],
    singer: Annotated[str | None, Query(max_length=200, description="exact singer name")] = None,
    domain: Domain | None = None,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="cursor: `next_after` of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TracksPage:
    """Catalogue tracks by ascending id, filtered by singer and domain (keyset pagination)."""
    page = await runtime.catalog_call(
        runtime.catalog.list_tracks, singer=singer, domain=domain, after_id=after, limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    return TracksPage(
        tracks=[TrackOut.of(t, runtime.audio.playable(t)) for t in page],
        next_after=page[-1].id if more else None,
    )


@router.get("/tracks/{track_id}", response_model=TrackOut, responses=NOT_FOUND)
async def get_track(
    track_id: TrackId, runtime: Annotated[Runtime, Depends(ready_runtime)]
) -> TrackOut:
    track = await runtime.catalog_call(runtime.catalog.get_track, track_id)
    return TrackOut.of(track, runtime.audio.playable(track))


@write_router.post(
    "/tracks",
    response_model=TrackAdded,
    status_code=201,
    responses={
        **UPLOAD_ERRORS,
        200: {
            "model": TrackAdded,
            "description": "already in the "
            "catalogue (same content, domain and singer): the existing track",
        },
        409: {
            "model": ErrorOut,
            "description": "same content filed under another "
            "singer, or a catalogue built by another checkpoint",
        },
    },
)
async def add_track(
    response: Response,
    file: Annotated[UploadFile, File(description="the track's audio (any supported format)")],
    singer: Annotated[str, Form(min_length=1, max_length=200)],
    domain: Annotated[Domain, Form(description="mono: vocals only; mixed: a finished song")],
    runtime: Annotated[Runtime, Depends(ready_runtime)],
    title: Annotated[str | None, Form(max_length=500)] = None,
    external_id: Annotated[str | None, Form(max_length=200)] = None,
) -> TrackAdded:
    """Embed one upload and add it to the catalogue (idempotent for the same file)."""
    singer = singer.strip()
    if not singer:
        raise ApiError(422, "invalid_parameters", "singer must not be blank")
    await runtime.require_consistent_catalog()
    data = await read_upload(file)
    digest = content_hash(data)
    ckpt = runtime.embedder.checkpoint_id
    quality = None
    async with runtime.content_lock(f"{digest}/{domain}"):
        existing = await runtime.catalog_call(runtime.catalog.find_track, digest, ckpt, domain)
        if existing is None:
            emb = await runtime.embed(data, domain, runtime.settings.max_track_seconds)
            quality = Quality.of(emb)
            track = await runtime.catalog_call(
                runtime.catalog.add_track,
                emb.vector,
                singer=singer,
                domain=domain,
                duration_s=emb.duration_s,
                n_segments=emb.n_segments,
                content_hash=digest,
                checkpoint_id=ckpt,
                path=None,
                title=title or _stem(file.filename),
                external_id=external_id,
            )
        elif existing.singer == singer:
            track, response.status_code = existing, 200
        else:
            raise ApiError(
                409,
                "duplicate_track",
                f"this file is already track {existing.id}, sung by {existing.singer!r}",
                track_id=existing.id,
            )
        # Kept under its content hash so that GET /tracks/{id}/audio can play it.
        await run_in_threadpool(runtime.audio.keep_upload, data, digest, file.filename)
    response.headers["Location"] = f"/tracks/{track.id}"
    return TrackAdded(
        **TrackOut.of(track, runtime.audio.playable(track)).model_dump(), quality=quality
    )


@write_router.delete("/tracks/{track_id}", response_model=TrackOut, responses=NOT_FOUND)
async def delete_track(
    track_id: TrackId, runtime: Annotated[Runtime, Depends(ready_runtime)]
) -> TrackOut:
    """Remove a track; its singer's models are updated (the singer goes with its last track).
    A stored upload goes with the last track of its content."""
    track = await runtime.catalog_call(runtime.catalog.remove_track, track_id)
    await runtime.track_removed(track)
    removed = TrackOut.of(track, runtime.audio.playable(track))  # as it was before removal
    async with runtime.content_lock(f"{track.content_hash}/{track.domain}"):
        others = [
            await runtime.catalog_call(
                runtime.catalog.find_track, track.content_hash, track.checkpoint_id, domain
            )
            for domain in DOMAINS
        ]
        if not any(others):
            await run_in_threadpool(runtime.audio.discard_upload, track.content_hash)
    return removed
