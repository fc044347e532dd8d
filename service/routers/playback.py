"""`GET /tracks/{id}/audio`: a catalogued track's audio, with HTTP Range support.

The file is found from the track id alone (see service.audio_files); Starlette's
FileResponse answers `Range` requests with 206 (one range) or multipart 206 (several), 416
for a range outside the file, and ETag/Last-Modified for `If-Range`.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from service.audio_files import OUTSIDE_ROOTS, AudioUnavailableError, media_type
from service.errors import ApiError
from service.routers.tracks import TrackId
from service.runtime import RuntimeDep
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
            "description": "the recorded file lies outside the indexed folders and "
            "SINGER_AUDIO_ROOTS (`reason`: outside_roots)",
        },
        404: {
            "model": ErrorOut,
            "description": "no such track, or its file is gone or was not kept (`reason`: "
            "gone, not_stored)",
        },
        416: {"description": "the range lies outside the file"},
    },
)
async def track_audio(track_id: TrackId, runtime: RuntimeDep) -> FileResponse:
    """Stream the track's audio file (the `<audio>` element seeks with Range requests)."""
    track = await runtime.catalog_call(runtime.catalog.get_track, track_id)
    try:
        path = await run_in_threadpool(runtime.audio.locate, track)
    except AudioUnavailableError as err:
        if err.reason == OUTSIDE_ROOTS:
            raise ApiError(403, "audio_not_allowed", err.explanation, reason=err.reason) from None
        raise ApiError(404, "audio_gone", err.explanation, reason=err.reason) from None
    return FileResponse(path, media_type=media_type(path))
