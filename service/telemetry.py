"""Prometheus metrics of one app (`prometheus_client`), with a fixed set of label values.

Request counts and latencies are labelled by method, route template and status, each mapped
to a value known in advance (anything else: `other`), so that no client can add series:
a method name or path of its own choosing would otherwise grow `/metrics` (and memory) for
good. Gauges (readiness, inference queue, catalogue size) are read at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

from fastapi.routing import iter_route_contexts
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Every status the standard names (about 60): what the server sends is one of these.
STATUSES = frozenset(str(s.value) for s in HTTPStatus)

# name, help, labels -> their values at scrape time
GaugeReading = Callable[[], Iterable[tuple[dict[str, str], float]]]


class _Gauges(Collector):
    """Gauges whose values are read from callbacks when /metrics is scraped."""

    def __init__(self) -> None:
        self.readings: list[tuple[str, str, GaugeReading]] = []

    def collect(self) -> Iterable[Metric]:
        for name, help_text, read in self.readings:
            values = list(read())
            family = GaugeMetricFamily(
                name, help_text, labels=sorted(values[0][0]) if values else []
            )
            for labels, value in values:
                family.add_metric([labels[k] for k in sorted(labels)], value)
            yield family


class Telemetry:
    """The metrics of one app instance, in a registry of its own (apps never share series)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and others
        self.requests = Counter(
            "singer_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "singer_http_request_duration_seconds",
            "HTTP request latency by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embedding_seconds = Histogram(
            "singer_embedding_seconds",
            "Time to decode and embed one upload (inference thread), by domain.",
            ["domain"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._gauges = _Gauges()
        self.registry.register(self._gauges)

    def gauge(self, name: str, help_text: str, read: GaugeReading) -> None:
        """A gauge read at scrape time: `read()` gives (labels, value) pairs."""
        self._gauges.readings.append((name, help_text, read))

    def observe_embedding(self, domain: str, seconds: float) -> None:
        self.embedding_seconds.labels(domain if domain in ("mono", "mixed") else OTHER).observe(
            seconds
        )

    def render(self) -> bytes:
        """The text exposition format (0.0.4); blocking (gauges read the catalogue)."""
        return generate_latest(self.registry)


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The template of the route `scope` goes to (`/tracks/{track_id}`, `/static/{path}`),
    found as the router finds it: the first full match, else the first partial one (a
    known path with another method: 405); `OTHER` when none matches. Routes of included
    routers and mounts count as the app's own, with their full paths."""
    partial = None
    for route in iter_route_contexts(routes):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.path_format or OTHER
        if match is Match.PARTIAL and partial is None:
            partial = route.path_format
    return partial or OTHER


class RequestMetrics:
    """Pure ASGI middleware: counts and times every HTTP request by method, route template
    and status, each mapped to the fixed label set. The route is the full template of one of
    the app's own routes, never the request's path: an unmatched path is `other`. The route
    the router chose (`scope["route"]`) is looked up in a table of templates made once;
    requests that leave none (mounts, the framework's /openapi.json, unknown paths) are
    matched again by `route_template` (tens of microseconds)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry):
        self.app = app
        self.telemetry = telemetry
        self._templates: dict[int, str | None] = {}  # id(route) -> template; None: ambiguous
        self._n_routes = -1

    def _template_of(self, routes: list[BaseRoute], route: object) -> str | None:
        if len(routes) != self._n_routes:  # routes are added before serving; once, then
            table: dict[int, str | None] = {}
            for context in iter_route_contexts(routes):
                key = id(context.original_route)  # a router included twice: ambiguous
                table[key] = None if key in table else context.path_format
            self._templates, self._n_routes = table, len(routes)
        return self._templates.get(id(route))

    def _route(self, scope: Scope, request_scope: Scope) -> str:
        """`scope` as the app left it; `request_scope`: its path as it came in."""
        routes = getattr(scope.get("app"), "routes", None)  # the Starlette app's
        if not routes:
            return OTHER
        template = self._template_of(routes, scope.get("route"))
        return template or route_template(routes, request_scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()
        # The path as it came in: a mount rewrites the scope's root_path.
        request_scope = {k: scope.get(k) for k in ("type", "path", "method")}
        request_scope["root_path"] = scope.get("root_path", "")

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope["method"] if scope["method"] in METHODS else OTHER
            route = self._route(scope, request_scope)
            code = str(status) if str(status) in STATUSES else OTHER
            self.telemetry.request_seconds.labels(method, route).observe(
                time.perf_counter() - start
            )
            self.telemetry.requests.labels(method, route, code).inc()
