"""FastAPI dependencies: the runtime, readiness, and write access (X-API-Key)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
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


MAX_LISTED = 20  # query parameter errors named in one answer


def _declared(dependant: Dependant) -> tuple[set[str], set[str]]:
    """The query parameter and body field names of a route, its dependencies' included (a
    few fields: microseconds a request)."""
    query = {f.alias for f in dependant.query_params}
    body = {f.alias for f in dependant.body_params}
    for sub in dependant.dependencies:
        q, b = _declared(sub)
        query |= q
        body |= b
    return query, body


def checked_query(request: Request) -> None:
    """422 for a query parameter that an API endpoint does not take, or takes once but was
    given more often. Ignoring it would answer another question than the client asked:
    `POST /identify?domain=mixed` would be read as mono (domain is a form field), and keeping
    one of `?offset=0&offset=10` hides a client's bug. The page routes (not in the schema)
    accept any, for links with tracking parameters."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    query, body = _declared(route.dependant)
    counts = Counter(k for k, _ in request.query_params.multi_items())  # thousands fit a URL
    errors = [
        {"type": "repeated", "loc": ["query", k], "msg": "given more than once"}
        for k in sorted(k for k, n in counts.items() if n > 1)
    ]
    for k in sorted(counts.keys() - query):
        msg = (
            "a form field of this endpoint: send it in the multipart/form-data body"
            if k in body
            else "not a parameter of this endpoint"
        )
        errors.append({"type": "unknown", "loc": ["query", k], "msg": msg})
    if len(errors) > MAX_LISTED:  # a URL of thousands of names gets a short answer
        rest = {"type": "more", "loc": ["query"], "msg": f"{len(errors) - MAX_LISTED} more"}
        errors = [*errors[:MAX_LISTED], rest]
    if errors:
        raise ApiError(422, "invalid_parameters", errors)


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
