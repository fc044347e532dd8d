"""FastAPI dependencies: parameter checks and write access (X-API-Key, or local mode: a
loopback Host and a same-origin request). The runtime and readiness dependencies are
service.runtime's (`RuntimeDep`, `AnyRuntimeDep`)."""

from __future__ import annotations

import difflib
import ipaddress
import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from service.errors import ApiError, summarize
from service.runtime import Runtime, get_runtime

API_KEY_HEADER = "X-API-Key"

# Declares the header in the OpenAPI schema ("Authorize" in /docs). Enforcement is in
# WriteRoute, which runs before the request body is read.
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="APIKey",
    description="Required by write endpoints when SINGER_API_KEY is set.",
)


MAX_LISTED = 20  # parameter problems named in one answer
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


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


def digits_only(value: object) -> object:
    """A path or query integer as written: ASCII digits only (`/tracks/1.0` or `/tracks/+1`
    would otherwise be read as track 1). Use as `BeforeValidator(digits_only)`; every
    integer path parameter is checked so anyway (`checked_parameters`)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written in digits, e.g. 42")
    return value


def _integer_path_params(route: APIRoute) -> list[str]:
    """Names of the route's integer path parameters."""
    return [f.alias for f in route.dependant.path_params if f.field_info.annotation is int]


def _unknown(where: str, name: str, valid: set[str], msg: str | None = None) -> dict:
    """An unknown name, with the closest valid one (difflib) or the list of valid ones."""
    if msg is None:
        what = "parameter" if where == "query" else "field"
        close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
        if close:
            msg = f"not a {what} of this endpoint; did you mean `{close[0]}`?"
        elif valid:
            msg = f"not a {what} of this endpoint (it takes: {', '.join(sorted(valid))})"
        else:
            msg = f"this endpoint takes no {what}"
    return {"type": "unknown", "loc": [where, name[:100]], "msg": msg}


def _problems(where: str, names: Counter, valid: set[str], elsewhere: set[str]) -> list[dict]:
    """Repeated and unknown names among `names` (counted), given the `valid` ones here and
    those the endpoint takes somewhere else."""
    errors = [
        {"type": "repeated", "loc": [where, k[:100]], "msg": "given more than once"}
        for k in sorted(k for k, n in names.items() if n > 1 and k in valid)
    ]
    for k in sorted(names.keys() - valid):
        if k in elsewhere and where == "query":
            msg = "a form field of this endpoint: send it in the multipart/form-data body"
            errors.append(_unknown(where, k, valid, msg))
        elif k in elsewhere:
            errors.append(_unknown(where, k, valid, "a query parameter of this endpoint"))
        else:
            errors.append(_unknown(where, k, valid))
    return errors


async def checked_parameters(request: Request) -> None:
    """422 for a query parameter or form field that an API endpoint does not take, or takes
    once but was given more often, naming it and the closest valid name ("did you mean
    `domain`?"), and for an integer path parameter not written in digits. Ignoring any of
    them would answer another question than the client asked: `-F domian=mixed` or `POST
    /identify?domain=mixed` would be read as mono, `/tracks/1.0` as track 1, and keeping one
    of `?offset=0&offset=10` hides a client's bug. Runs after the framework has parsed the
    form (cached on the request) and before the fields are validated. The page routes (not
    in the schema) accept any query, for links with tracking parameters."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    query, body = _declared(route.dependant)
    counts = Counter(k for k, _ in request.query_params.multi_items())  # thousands fit a URL
    errors = _problems("query", counts, query, body)
    for name in _integer_path_params(route):  # `/tracks/1.0` would be read as track 1
        value = request.path_params.get(name)
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            errors.append(
                {
                    "type": "int_parsing",
                    "loc": ["path", name],
                    "msg": "must be a whole number written in digits, e.g. 42",
                    "input": value[:100],
                }
            )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type in _FORM_TYPES:
        form = await request.form()  # parsed (and bounded) already: the framework's cached copy
        errors += _problems("body", Counter(k for k, _ in form.multi_items()), body, query)
    if len(errors) > MAX_LISTED:  # a URL of thousands of names gets a short answer
        rest = {"type": "more", "loc": ["query"], "msg": f"{len(errors) - MAX_LISTED} more"}
        errors = [*errors[:MAX_LISTED], rest]
    if errors:
        raise ApiError(422, "invalid_parameters", summarize(errors), errors=errors)


def _host_port(authority: str, default_port: int | None) -> tuple[str, int | None] | None:
    """('127.0.0.1', 8000) from '127.0.0.1:8000', ('::1', None) from '[::1]'; None when it
    does not parse."""
    try:
        parts = urlsplit("//" + authority)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path:
        return None
    return parts.hostname.lower(), port if port is not None else default_port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_local_request(request: Request) -> None:
    """Local mode (writes without a key): 403 unless the request is addressed to a loopback
    name (`Host`: localhost, 127.0.0.0/8, ::1; a rebound DNS name pointing there is refused)
    and comes from the same origin or from no browser page at all (`Origin` absent or equal
    to the Host; `Sec-Fetch-Site` absent, same-origin or none). A page on another site
    cannot then write to a service on the user's machine."""
    host = _host_port(request.headers.get("host", ""), None)
    if host is None or not _is_loopback(host[0]):
        raise ApiError(
            403,
            "local_only",
            "writes without an API key are accepted only at a loopback address (Host: "
            "localhost, 127.0.0.1 or [::1]); set SINGER_API_KEY to write from elsewhere",
        )
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin is not None:
        scheme, _, authority = origin.partition("://")
        default = {"http": 80, "https": 443}.get(scheme.lower())
        here = (host[0], host[1] if host[1] is not None else default)
        if _host_port(authority, default) != here:
            site = "cross-site"
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(
            403,
            "local_only",
            "writes without an API key are accepted only from the service's own page, not "
            "from another site; set SINGER_API_KEY for other clients",
        )


def check_write_access(runtime: Runtime, request: Request) -> None:
    """401 without the configured key; 403 when writes are disabled altogether, or in local
    mode for a request that is not local (`check_local_request`)."""
    settings = runtime.settings
    provided_key = request.headers.get(API_KEY_HEADER)
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
    else:
        check_local_request(request)


class WriteRoute(APIRoute):
    """A route that checks write access before anything else, the upload body included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            check_write_access(get_runtime(request), request)
            return await handler(request)

        return guarded
