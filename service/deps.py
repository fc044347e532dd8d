"""FastAPI dependencies: the runtime, readiness, and write access (X-API-Key)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from service.errors import ApiError
from service.runtime import Runtime

API_KEY_HEADER = "X-API-Key"

# Declares the header in the OpenAPI schema ("Authorize" in /docs). Enforcement is in
# WriteRoute, which runs before the request body is read.
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="APIKey",
    description="Required by write endpoints when SINGER_API_KEY is set.",
)


def single_valued_query(request: Request) -> None:
    """422 for a query parameter given twice: every parameter of this API takes one value, and
    silently keeping one of several (`?offset=0&offset=10`) hides a client's bug."""
    keys = [k for k, _ in request.query_params.multi_items()]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ApiError(
            422,
            "invalid_parameters",
            [
                {"type": "repeated", "loc": ["query", k], "msg": "given more than once"}
                for k in repeated
            ],
        )


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def ready_runtime(request: Request) -> Runtime:
    """The runtime, or 503 while the model and catalogue are not loaded."""
    runtime = get_runtime(request)
    runtime.require_ready()
    return runtime


def check_write_access(runtime: Runtime, provided_key: str | None) -> None:
    """401 without the configured key; 403 when writes are disabled altogether."""
    settings = runtime.settings
    if settings.api_key is not None:
        expected = settings.api_key.get_secret_value().encode()
        if provided_key is None or not secrets.compare_digest(provided_key.encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                f"a valid {API_KEY_HEADER} header is required",
                headers={"WWW-Authenticate": API_KEY_HEADER},
            )
    elif not settings.allow_unauthenticated_writes:
        raise ApiError(
            403,
            "writes_disabled",
            "write endpoints are disabled: set SINGER_API_KEY (clients send it in the "
            f"{API_KEY_HEADER} header), or SINGER_ALLOW_UNAUTHENTICATED_WRITES=true for local use",
        )


class WriteRoute(APIRoute):
    """A route that checks write access before anything else, the upload body included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            check_write_access(get_runtime(request), request.headers.get(API_KEY_HEADER))
            return await handler(request)

        return guarded
