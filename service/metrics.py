"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Counters and histograms are updated from the request path under one lock; gauges are read
from callbacks at scrape time (catalogue size, inference queue), so they are never stale.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]
GaugeCallback = Callable[[], Iterable[tuple[dict[str, str], float]]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = labels + ((extra,) if extra else ())
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metrics:
    """A tiny registry: counters, histograms and callback gauges, rendered on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help), in declaration order
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, tuple[tuple[float, ...], dict[Labels, list[float]]]] = {}
        self._gauges: dict[str, GaugeCallback] = {}

    def counter(self, name: str, help_text: str) -> None:
        self._help[name] = ("counter", help_text)
        self._counters[name] = {}

    def histogram(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> None:
        self._help[name] = ("histogram", help_text)
        self._histograms[name] = (tuple(sorted(buckets)), {})

    def gauge(self, name: str, help_text: str, callback: GaugeCallback) -> None:
        self._help[name] = ("gauge", help_text)
        self._gauges[name] = callback

    def inc(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, labels: dict[str, str], value: float) -> None:
        key = tuple(sorted(labels.items()))
        buckets, series = self._histograms[name]
        with self._lock:
            # Per-bucket (non-cumulative) counts, then sum and count.
            state = series.setdefault(key, [0.0] * (len(buckets) + 3))
            state[bisect.bisect_left(buckets, value)] += 1
            state[-2] += value
            state[-1] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
            histograms = {
                k: (b, {lk: list(s) for lk, s in v.items()})
                for k, (b, v) in self._histograms.items()
            }
        for name, (kind, help_text) in self._help.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "counter":
                for labels, value in sorted(counters[name].items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
            elif kind == "histogram":
                buckets, series = histograms[name]
                for labels, state in sorted(series.items()):
                    cumulative = 0.0
                    for bound, count in zip((*buckets, math.inf), state[: len(buckets) + 1]):
                        cumulative += count
                        le = _fmt_labels(labels, ("le", _fmt_value(bound)))
                        lines.append(f"{name}_bucket{le} {_fmt_value(cumulative)}")
                    lines.append(f"{name}_sum{_fmt_labels(labels)} {_fmt_value(state[-2])}")
                    lines.append(f"{name}_count{_fmt_labels(labels)} {_fmt_value(state[-1])}")
            else:
                for gauge_labels, value in self._gauges[name]():
                    key = tuple(sorted(gauge_labels.items()))
                    lines.append(f"{name}{_fmt_labels(key)} {_fmt_value(value)}")
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts requests and times them per route template (not per raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        metrics.counter("singer_http_requests_total", "HTTP requests by method, route and status.")
        metrics.histogram(
            "singer_http_request_duration_seconds", "HTTP request latency by method and route."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            labels = {"method": scope["method"], "route": route}
            self.metrics.observe(
                "singer_http_request_duration_seconds", labels, time.perf_counter() - start
            )
            self.metrics.inc("singer_http_requests_total", {**labels, "status": str(status)})
