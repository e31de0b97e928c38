"""The endpoint's Prometheus metrics: every request counted by route template (never the
path itself: it names runs), method and status code, with a latency histogram; served
at `/metrics` with the rest of the process's metrics (entity commands sent from here)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from ._limits import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "kurable_endpoint_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "code"],
)
REQUEST_DURATION = Histogram(
    "kurable_endpoint_request_duration_seconds",
    "HTTP request latency, from the request to the end of the answer (SSE streams: their "
    "whole length), by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/namespaces/{namespace}/workflows/{name}`), or
    `unmatched`: a label never carries a run's name."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestMetrics:
    """Count each HTTP request once its answer has started (ASGI middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope.get("method", "GET")
            method = method if method in METHODS else "OTHER"
            route = route_label(scope)
            REQUESTS.labels(route, method, str(code)).inc()
            REQUEST_DURATION.labels(route, method).observe(time.monotonic() - start)


def exposition() -> tuple[bytes, str]:
    """The process's metrics in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
