"""Map every error the service can meet to a JSON response: bad input is always a 4xx.

Every error body has one shape (`service.schemas.ErrorOut`): `detail`, a sentence for people;
`code`, a stable machine-readable string; `errors`, the per-field problems (`loc`, `msg`,
`type`; empty when the error is not about fields); plus fields of some codes (e.g.
`supported_formats`). Framework errors (validation, 404, 405, unreadable bodies) are
reshaped to it. Only a bug reaches the 500 handler.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from catalog import CatalogError, DuplicateTrackError, TrackNotFoundError
from catalog.errors import CatalogRetiredError, CatalogUnavailableError
from model.audio import SUPPORTED_FORMATS
from model.errors import (
    AudioError,
    AudioTooLongError,
    AudioTooShortError,
    NoVoicedSegmentError,
    UnsupportedAudioParamsError,
    UnsupportedFormatError,
)
from service.cursors import BadCursorError
from service.inference import DeviceOutOfMemoryError, OverloadedError
from service.uploads import BodyRefusedError

# An object's default repr names a memory address (`<_io.BytesIO object at 0x7f...>`), and a
# type's repr is Python, not the API (`<class 'str'>`): never part of an answer.
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>|<class '[^<>']*'>")
# What FastAPI says when a form field declared as a file is sent as a plain value
# (`-F file=0`): "Value error, Expected UploadFile, received: <class 'str'>".
_NOT_A_FILE = "Expected UploadFile"
NOT_A_FILE_MSG = (
    "expected a file: send it as a multipart part with a file name (curl -F file=@take.wav)"
)
LISTED_IN_DETAIL = 3  # field problems spelled out in `detail`; all of them are in `errors`

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the service raises on purpose, with its HTTP status and stable code;
    `errors` lists per-field problems ({loc, msg, type})."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict | None = None,
        errors: list[dict[str, Any]] | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.errors = errors or []
        self.extra = extra


def error_response(
    status: int,
    code: str,
    detail: str,
    headers: dict | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The one error body: {detail, code, errors, **extra}."""
    body = jsonable_encoder(
        {
            "detail": _OBJECT_REPR.sub("object", detail),
            "code": code,
            "errors": errors or [],
            **extra,
        }
    )
    return JSONResponse(body, status, headers=headers)


def summarize(errors: list[dict[str, Any]], what: str = "parameter") -> str:
    """`detail` of a list of field problems: the first few, spelled out."""
    parts = [
        f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
        for e in errors[:LISTED_IN_DETAIL]
        if e.get("type") != "more"
    ]
    more = len(errors) - len(parts)
    head = f"invalid {what}{'s' if len(errors) > 1 else ''}: "
    return head + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def field_error(error: dict[str, Any]) -> dict[str, Any]:
    """A framework validation error as the API lists it: loc, msg, type, and the offending
    value only when it is a plain scalar (never an upload object)."""
    msg = str(error.get("msg", ""))
    if _NOT_A_FILE in msg:
        msg = NOT_A_FILE_MSG
    msg = msg.removeprefix("Value error, ")  # pydantic's wording for a validator's ValueError
    out: dict[str, Any] = {
        "loc": [str(p) if not isinstance(p, int) else p for p in error.get("loc", ())],
        "msg": _OBJECT_REPR.sub("object", msg),
        "type": str(error.get("type", "invalid")),
    }
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)):
        out["input"] = value[:200] if isinstance(value, str) else value
    return out


# (error class, HTTP status, code), tested in this order: subclasses before their bases.
_AUDIO_CODES: tuple[tuple[type[AudioError], int, str], ...] = (
    (UnsupportedFormatError, 415, "unsupported_format"),
    (AudioTooShortError, 422, "audio_too_short"),
    (NoVoicedSegmentError, 422, "no_voiced_segment"),
    (AudioTooLongError, 422, "audio_too_long"),
    (UnsupportedAudioParamsError, 422, "unsupported_audio_params"),
    (AudioError, 422, "invalid_audio"),
)


def _audio_limits(err: AudioError) -> dict[str, Any]:
    """What a client needs, beside the message, to fix the upload."""
    if isinstance(err, UnsupportedFormatError):
        return {"supported_formats": list(SUPPORTED_FORMATS)}
    if isinstance(err, AudioTooShortError):
        return {
            "duration_s": round(err.duration_s, 3),
            "min_duration_s": round(err.min_duration_s, 3),
        }
    if isinstance(err, AudioTooLongError):
        return {"duration_s": round(err.duration_s, 3), "max_duration_s": err.max_duration_s}
    return {}


def audio_error_response(err: AudioError) -> JSONResponse:
    """The 4xx for an audio file the model cannot use; `reason` has no server-side path."""
    status, code = next((s, c) for klass, s, c in _AUDIO_CODES if isinstance(err, klass))
    return error_response(status, code, err.reason, **_audio_limits(err))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (one route per method: GET /tracks/{id}
    and DELETE /tracks/{id} are separate routes, and Starlette's 405 names only the first)."""
    routes = request.app.router.routes
    return ", ".join(
        m
        for m in _METHODS
        if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(
            err.status, err.code, err.message, err.headers, err.errors, **err.extra
        )

    @app.exception_handler(AudioError)
    async def _audio_error(request: Request, err: AudioError) -> JSONResponse:
        return audio_error_response(err)

    @app.exception_handler(TrackNotFoundError)
    async def _not_found(request: Request, err: TrackNotFoundError) -> JSONResponse:
        return error_response(404, "track_not_found", str(err))

    @app.exception_handler(DuplicateTrackError)
    async def _duplicate(request: Request, err: DuplicateTrackError) -> JSONResponse:
        # Same content added concurrently by another process (the service itself serialises
        # its own uploads of one content).
        return error_response(409, "duplicate_track", str(err), track_id=err.track_id)

    @app.exception_handler(CatalogUnavailableError)
    async def _catalog_unavailable(request: Request, err: CatalogUnavailableError) -> JSONResponse:
        # The catalogue's database is down or unreachable; the next call reconnects. Where it
        # lives is the host's business: the log has it, the answer does not.
        log.warning("catalogue unavailable: %s", err)
        detail = "the catalogue's database cannot be reached now; retry shortly"
        return error_response(503, "catalog_unavailable", detail, headers={"Retry-After": "2"})

    @app.exception_handler(CatalogRetiredError)
    async def _catalog_retired(request: Request, err: CatalogRetiredError) -> JSONResponse:
        # A write on a generation a migration retired, when this service did not follow the
        # switch in time (it retries once it has: service/catalog_swap.py).
        detail = "the catalogue is switching to a migrated generation; retry shortly"
        return error_response(503, "catalog_switching", detail, headers={"Retry-After": "5"})

    @app.exception_handler(CatalogError)
    async def _catalog_error(request: Request, err: CatalogError) -> JSONResponse:
        # The catalogue refuses a write that conflicts with what it holds.
        return error_response(409, "catalog_conflict", str(err))

    @app.exception_handler(BadCursorError)
    async def _bad_cursor(request: Request, err: BadCursorError) -> JSONResponse:
        return error_response(422, "bad_cursor", str(err))

    @app.exception_handler(OverloadedError)
    async def _overloaded(request: Request, err: OverloadedError) -> JSONResponse:
        return error_response(503, "overloaded", str(err), headers={"Retry-After": "1"})

    @app.exception_handler(DeviceOutOfMemoryError)
    async def _device_oom(request: Request, err: DeviceOutOfMemoryError) -> JSONResponse:
        return error_response(503, "device_out_of_memory", str(err), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [field_error(e) for e in err.errors()]
        return error_response(422, "invalid_parameters", summarize(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:
            # The framework's only 400: a multipart or form body its parser cannot read (its
            # detail is the parser's message, e.g. "Missing boundary in multipart.").
            return error_response(400, "malformed_body", f"malformed request body: {err.detail}")
        if err.status_code == 404:
            return error_response(404, "not_found", f"no endpoint at {request.url.path[:200]}")
        if err.status_code == 405:
            allowed = _allowed_methods(request)
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method[:20]} is not served at this path; allowed: {allowed}",
                {"Allow": allowed},
            )
        return error_response(
            err.status_code,
            f"http_{err.status_code}",
            str(err.detail),
            getattr(err, "headers", None),
        )

    @app.exception_handler(BodyRefusedError)
    async def _body_refused(request: Request, err: BodyRefusedError) -> JSONResponse:
        # Too large, too slow, too late, no slot: the answer closes the connection.
        headers = dict(err.headers or {})
        return error_response(err.status_code, err.code, err.detail, headers, **err.extra)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
