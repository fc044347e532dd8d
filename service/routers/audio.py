"""`GET /tracks/{id}/audio`: a catalogued track's audio, with HTTP Range support.

The file is found from the track id alone (see service.audio_files); Starlette's
FileResponse answers `Range` requests with 206 (one range) or multipart 206 (several), 416
for a range outside the file, and ETag/Last-Modified for `If-Range`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from service.audio_files import AudioUnavailableError, media_type
from service.deps import ready_runtime
from service.errors import ApiError
from service.routers.tracks import TrackId
from service.runtime import Runtime
from service.schemas import ErrorOut

router = APIRouter(tags=["catalogue"])


@router.get(
    "/tracks/{track_id}/audio",
    response_class=FileResponse,
    responses={
        200: {"content": {"audio/*": {}}, "description": "the whole file"},
        206: {"content": {"audio/*": {}}, "description": "the requested byte range(s)"},
        403: {
            "model": ErrorOut,
            "description": "the recorded file lies outside SINGER_AUDIO_ROOTS",
        },
        404: {"model": ErrorOut, "description": "no such track, or its file is gone"},
        416: {"description": "the range lies outside the file"},
    },
)
async def track_audio(
    track_id: TrackId, runtime: Annotated[Runtime, Depends(ready_runtime)]
) -> FileResponse:
    """Stream the track's audio file (the `<audio>` element seeks with Range requests)."""
    track = await runtime.catalog_call(runtime.catalog.get_track, track_id)
    try:
        path = await run_in_threadpool(runtime.audio.locate, track)
    except AudioUnavailableError as err:
        if err.reason == "outside_roots":
            raise ApiError(
                403,
                "audio_not_allowed",
                f"the file of track {track_id} lies outside the directories the service may "
                "serve (SINGER_AUDIO_ROOTS)",
            ) from None
        raise ApiError(
            404, "audio_gone", f"the audio file of track {track_id} is no longer available"
        ) from None
    return FileResponse(path, media_type=media_type(path))
