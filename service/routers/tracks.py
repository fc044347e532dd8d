"""`GET /tracks`, `GET /tracks/{id}`, `POST /tracks`, `DELETE /tracks/{id}`: catalogue entries.

Writes go through `WriteRoute` (API key checked before the body is read) and return only
after the catalogue has committed them, so a 2xx write survives a crash.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Response, Security, UploadFile
from pydantic import BeforeValidator

from catalog import Track
from service import track_writes
from service.deps import WriteRoute, api_key_scheme, digits_only
from service.errors import ApiError
from service.runtime import Runtime, RuntimeDep
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
TrackId = Annotated[
    int,
    BeforeValidator(digits_only),
    Path(ge=1, le=2**63 - 1, description="catalogue track id"),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no track with this id"}
}


def track_out(runtime: Runtime, track: Track, playable: bool | None = None) -> TrackOut:
    """A track as answers show it: whether it plays now and why not (unless given), its
    path as the settings allow."""
    unavailable = None
    if playable is None:
        unavailable = runtime.audio.unavailable(track)
        playable = unavailable is None
    return TrackOut.of(
        track,
        playable,
        unavailable=unavailable,
        expose_paths=runtime.settings.expose_paths,
        display=runtime.audio.display_path,
    )


def _stem(filename: str | None) -> str | None:
    """Default title: the uploaded file's name without extension."""
    return (PurePath(filename).stem[:500] or None) if filename else None


@router.get("/tracks", response_model=TracksPage)
async def list_tracks(
    runtime: RuntimeDep,
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
        tracks=[track_out(runtime, t) for t in page], next_after=page[-1].id if more else None
    )


@router.get("/tracks/{track_id}", response_model=TrackOut, responses=NOT_FOUND)
async def get_track(track_id: TrackId, runtime: RuntimeDep) -> TrackOut:
    return track_out(runtime, await runtime.catalog_call(runtime.catalog.get_track, track_id))


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
    runtime: RuntimeDep,
    title: Annotated[str | None, Form(max_length=500)] = None,
    external_id: Annotated[str | None, Form(max_length=200)] = None,
) -> TrackAdded:
    """Embed one upload and add it to the catalogue (idempotent for the same file)."""
    singer = singer.strip()
    if not singer:
        raise ApiError(422, "invalid_parameters", "singer must not be blank")
    added = await track_writes.add_track(
        runtime,
        await read_upload(file),
        singer=singer,
        domain=domain,
        title=title or _stem(file.filename),
        external_id=external_id,
        filename=file.filename,
    )
    if not added.created:
        response.status_code = 200
    response.headers["Location"] = f"/tracks/{added.track.id}"
    quality = Quality.of(added.embedding) if added.embedding is not None else None
    return TrackAdded(**track_out(runtime, added.track).model_dump(), quality=quality)


@write_router.delete("/tracks/{track_id}", response_model=TrackOut, responses=NOT_FOUND)
async def delete_track(track_id: TrackId, runtime: RuntimeDep) -> TrackOut:
    """Remove a track; its singer's models are updated (the singer goes with its last track).
    A stored upload goes with the last track of its content."""
    removed = await track_writes.delete_track(runtime, track_id)
    return track_out(runtime, removed.track, removed.playable)
