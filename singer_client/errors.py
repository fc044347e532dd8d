"""Exceptions of the client: one class per family of the API's error codes.

Every error answer of the service is JSON `{"detail": str, "code": str, "errors": [...]}`
(service/README.md, Errors), sometimes with fields of its own (`supported_formats`,
`duration_s`, `track_id`, ...). `ApiError` keeps all of it: `status`, `code`, `detail`,
`errors` (per-field problems) and `body` (the whole answer). The older FastAPI shape,
`{"detail": [{"loc": ..., "msg": ..., "type": ...}]}`, is read too (as `invalid_parameters`),
and so is an answer that is not JSON at all (a proxy's HTML page).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any


class SingerClientError(Exception):
    """Base class of everything this client raises."""


class ClientConnectionError(SingerClientError):
    """The service could not be reached, or the connection failed mid-request (after the
    retries the call allows)."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one parameter or form field: where (`loc`, e.g. ["body", "top_k"]),
    what (`msg`), and its kind (`type`: missing, unknown, ...)."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None


@dataclass(eq=False)
class ApiError(SingerClientError):
    """The service answered with an error status."""

    status: int
    code: str | None
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None  # seconds, from the Retry-After header

    def __str__(self) -> str:
        return f"{self.status} {self.code or 'error'}: {self.detail}"


class BadRequestError(ApiError):
    """400 `malformed_body`: a request body the service could not parse."""


class InvalidParametersError(ApiError):
    """422 `invalid_parameters` (see `errors`) or `bad_cursor`."""


class AuthenticationError(ApiError):
    """401 `unauthorized`: a write without the right API key."""


class PermissionDeniedError(ApiError):
    """403: writes disabled (`writes_disabled`, `local_only`), or a track's audio outside
    the allowed folders (`audio_not_allowed`)."""


class NotFoundError(ApiError):
    """404: `track_not_found`, `audio_gone` (the track's file is no longer there),
    `not_found`; also a singer name no page of /singers holds (`singer_not_found`)."""


class ConflictError(ApiError):
    """409: `duplicate_track` (the same file under another singer; `body["track_id"]`),
    `checkpoint_mismatch`, `catalog_conflict`."""


class UploadRejectedError(ApiError):
    """408 `body_timeout` or 413 `upload_too_large`: the upload itself was refused."""


class UnsupportedFormatError(ApiError):
    """415 `unsupported_format`: not decodable audio (`body["supported_formats"]`)."""


class AudioRejectedError(ApiError):
    """422: decodable audio the service cannot use: `audio_too_short`, `audio_too_long`,
    `no_voiced_segment`, `unsupported_audio_params`, `invalid_audio`."""


class ServiceUnavailableError(ApiError):
    """503: `not_ready`, `loading`, `load_failed`, `overloaded`, `device_out_of_memory`,
    `too_many_uploads`; retried by the client (honouring `retry_after`) before it is raised."""


class ServerError(ApiError):
    """Any other 5xx (`internal_error`, a proxy's 502)."""


_BY_CODE: dict[str, type[ApiError]] = {
    "malformed_body": BadRequestError,
    "invalid_parameters": InvalidParametersError,
    "bad_cursor": InvalidParametersError,
    "unauthorized": AuthenticationError,
    "writes_disabled": PermissionDeniedError,
    "local_only": PermissionDeniedError,
    "audio_not_allowed": PermissionDeniedError,
    "track_not_found": NotFoundError,
    "audio_gone": NotFoundError,
    "not_found": NotFoundError,
    "duplicate_track": ConflictError,
    "checkpoint_mismatch": ConflictError,
    "catalog_conflict": ConflictError,
    "body_timeout": UploadRejectedError,
    "upload_too_large": UploadRejectedError,
    "unsupported_format": UnsupportedFormatError,
    "audio_too_short": AudioRejectedError,
    "audio_too_long": AudioRejectedError,
    "no_voiced_segment": AudioRejectedError,
    "unsupported_audio_params": AudioRejectedError,
    "invalid_audio": AudioRejectedError,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: UploadRejectedError,
    409: ConflictError,
    413: UploadRejectedError,
    415: UnsupportedFormatError,
    422: InvalidParametersError,
    503: ServiceUnavailableError,
}


def retry_after_s(value: str | None) -> float | None:
    """The Retry-After header (seconds, or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def api_error(status: int, content: bytes, retry_after: str | None = None) -> ApiError:
    """The exception for an error answer: its status, body and Retry-After header."""
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = content.decode("utf-8", "replace").strip()[:500]
        body = {"detail": text or f"HTTP {status}"}
    code = body.get("code") if isinstance(body.get("code"), str) else None
    detail, errors = body.get("detail"), _field_errors(body.get("errors"))
    if isinstance(detail, list):  # FastAPI's own shape: the field errors in `detail`
        errors = errors or _field_errors(detail)
        detail = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
        code = code or ("invalid_parameters" if status == 422 else None)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    return cls(
        status=status,
        code=code,
        detail=str(detail) if detail is not None else f"HTTP {status}",
        errors=errors,
        body=body,
        retry_after=retry_after_s(retry_after),
    )


def _field_errors(items: Any) -> list[FieldError]:
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if isinstance(item, dict):
            loc = item.get("loc")
            out.append(
                FieldError(
                    loc=list(loc) if isinstance(loc, list | tuple) else [],
                    msg=str(item.get("msg", "")),
                    type=str(item.get("type", "")),
                    input=item.get("input"),
                )
            )
    return out
