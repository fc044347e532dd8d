"""Metrics (service/telemetry.py): counts that match the requests made, and a label set that
no client can grow (issue 39: 200 requests with new method names once grew /metrics to
25.9 MB)."""

from __future__ import annotations

import asyncio
import random
import re
import string

from fastapi.routing import iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.telemetry import METHODS, OTHER, STATUSES
from tests.service.conftest import app_settings


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def drive(app, requests: list[tuple[str, str]]) -> str:
    """Send (method, path) requests straight to `app`'s ASGI interface (no HTTP client: ten
    thousand of them take seconds, not half a minute), its lifespan not run (no model is
    loaded, every route still answers), then return its /metrics."""

    async def call(method: str, target: str) -> bytes:
        path, _, query = target.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
        }
        body = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict:
            # The request (no body), then the client is gone.
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            body.append(message.get("body", b""))

        await app(scope, receive, send)
        return b"".join(body)

    async def run() -> str:
        for method, target in requests:
            await call(method, target)
        return (await call("GET", "/metrics")).decode()

    return asyncio.run(run())


def random_token(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def test_random_methods_and_paths_leave_metrics_small(tmp_path_factory, random_checkpoint):
    rng = random.Random(0)
    known = ["/healthz", "/readyz", "/tracks/12", "/singers", "/identify", "/static/app.js"]
    requests = []
    for _ in range(10_000):
        method = rng.choice([*sorted(METHODS), random_token(rng, rng.randint(1, 12)).upper()])
        path = rng.choice([*known, "/" + "/".join(random_token(rng, 8) for _ in range(3))])
        requests.append(
            (method, path + (f"?{random_token(rng, 5)}=1" if rng.random() < 0.2 else ""))
        )
    app = create_app(app_settings(tmp_path_factory, random_checkpoint))
    text = drive(app, requests)
    assert len(text.encode()) < 100_000, len(text.encode())
    routes = {c.path_format for c in iter_route_contexts(app.routes)} | {OTHER}
    http = families(text)
    counted = 0
    for name in ("singer_http_requests", "singer_http_request_duration_seconds"):
        for sample in http[name].samples:
            assert sample.labels["method"] in METHODS | {OTHER}
            assert sample.labels["route"] in routes
            assert sample.labels.get("status", "200") in STATUSES | {OTHER}
            counted += sample.value if sample.name == "singer_http_requests_total" else 0
    assert counted == len(requests)  # every request counted once (/metrics: after its answer)


def test_counts_and_latencies_match_the_requests(tmp_path_factory, random_checkpoint):
    app = create_app(app_settings(tmp_path_factory, random_checkpoint))
    text = drive(app, [("GET", "/healthz")] * 7 + [("DELETE", "/healthz")] * 2 + [("GET", "/x")])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    assert value("singer_http_requests_total", method="GET", route="/healthz", status="200") == 7
    assert value("singer_http_requests_total", method="DELETE", route="/healthz", status="405") == 2
    assert value("singer_http_requests_total", method="GET", route=OTHER, status="404") == 1
    assert value("singer_http_request_duration_seconds_count", method="GET", route="/healthz") == 7
    assert value("singer_ready") == 0.0  # not loaded: the lifespan did not run


def test_every_route_is_labelled_with_its_own_template(tmp_path_factory, random_checkpoint):
    """Routes of included routers, the write router, mounts (`/static/{path}`) and the
    framework's own (`/openapi.json`) count under their template, not `other`; a path that
    no route takes is `other`."""
    app = create_app(app_settings(tmp_path_factory, random_checkpoint))
    wanted = {}
    for route in iter_route_contexts(app.routes):
        template = route.path_format
        method = sorted(route.methods or {"GET"})[0]
        concrete = re.sub(r"\{path\}", "app.js", re.sub(r"\{\w+\}", "7", template))
        wanted.setdefault((method, concrete), template)
    assert {"/tracks/{track_id}/audio", "/singers/{singer_id}", "/static/{path}"} <= set(
        wanted.values()
    )
    text = drive(app, [*wanted, ("GET", "/tracks/7/nowhere")])
    counted = {}
    for sample in families(text)["singer_http_requests"].samples:
        key = (sample.labels["method"], sample.labels["route"])
        counted[key] = counted.get(key, 0) + sample.value
    for (method, _), template in wanted.items():
        assert counted.get((method, template), 0) >= 1, (method, template, counted)
    assert counted[("GET", OTHER)] == 1  # only the unknown path
