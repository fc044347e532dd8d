"""The fast tier requests every route: each (method, route template) of the app is requested
by some test of tests/service/ (TestClient, no server).

The requests are read from the tests' source: calls `client.get("/tracks/1")`,
`client.request("DELETE", f"/tracks/{id}")`, `post_audio(client, "/identify", ...)` and
`("GET", "/healthz")` pairs. Their paths (f-string fields filled with a sample value) are then
routed by the app's own matching, so a request counts for the route that would answer it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from service.app import create_app

HERE = Path(__file__).parent
METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
# Helpers of tests/service/conftest.py that send a request: name -> (method, index of the path)
HELPERS = {"post_audio": ("POST", 1)}
SAMPLE = "7"  # stands for an f-string field: an id, a file name


def _path(node: ast.expr) -> str | None:
    """The request path a string or f-string gives (fields filled with SAMPLE, the query
    dropped), or None when `node` is no such literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(str(v.value) if isinstance(v, ast.Constant) else SAMPLE for v in node.values)
    else:
        return None
    return text.split("?")[0] if text.startswith("/") else None


def _method(node: ast.expr) -> str | None:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return None
    return node.value.upper() if node.value.lower() in METHODS else None


def requests_in(source: str) -> set[tuple[str, str]]:
    """(METHOD, path) of every request a test module's source makes, as literals."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in METHODS and isinstance(node.func, ast.Attribute):
                path, method = _path(node.args[0]), name.upper()
            elif name == "request" and len(node.args) >= 2:
                path, method = _path(node.args[1]), _method(node.args[0])
            elif name in HELPERS and len(node.args) > HELPERS[name][1]:
                method, at = HELPERS[name]
                path = _path(node.args[at])
            else:
                continue
            if path and method:
                found.add((method, path))
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            method, path = _method(node.elts[0]), _path(node.elts[1])
            if path and method:
                found.add((method, path))
    return found


def _fast_tier_requests() -> set[tuple[str, str]]:
    this = Path(__file__).resolve()
    return {
        request
        for file in sorted(HERE.rglob("*.py"))
        if file.resolve() != this
        for request in requests_in(file.read_text())
    }


def _answering_route(routes: list, method: str, path: str) -> tuple[str, str] | None:
    """(METHOD, template) of the route the app would answer `method path` with."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return method, route.path_format
    return None


def test_every_route_is_requested_by_the_fast_tier(random_checkpoint, tmp_path):
    from service.settings import Settings

    app = create_app(Settings(index_dir=tmp_path / "index", checkpoint=random_checkpoint))
    routes = list(iter_route_contexts(app.routes))
    wanted = {
        (method, route.path_format)
        for route in routes
        # a mount answers any method; HEAD comes with GET
        for method in sorted((route.methods or {"GET"}) - {"HEAD"})
    }
    assert {("POST", "/identify"), ("DELETE", "/tracks/{track_id}")} <= wanted
    covered = {_answering_route(routes, m, p) for m, p in _fast_tier_requests()}
    assert sorted(wanted - covered) == []


def test_requests_are_read_from_every_call_form():
    """The reader finds each form of request the fast tier uses, and nothing else."""
    source = """
client.get("/tracks/12?limit=3")
client.delete(f"/tracks/{track['id']}")
client.request("PUT", "/tracks/1")
post_audio(client, "/identify", clip.path)
drive(app, [("GET", "/healthz"), ("BREW", "/coffee")])
labels.get("status")
client.get(url)
"""
    assert requests_in(source) == {
        ("GET", "/tracks/12"),
        ("DELETE", "/tracks/7"),
        ("PUT", "/tracks/1"),
        ("POST", "/identify"),
        ("GET", "/healthz"),
    }
