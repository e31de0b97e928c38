"""The endpoint's request metrics: labelled by route template, never by the path."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from prometheus_client import REGISTRY

from kurable.endpoint._metrics import RequestMetrics


def app() -> RequestMetrics:
    inner = FastAPI()

    @inner.get("/v1/namespaces/{namespace}/things/{name}")
    async def thing(namespace: str, name: str) -> dict[str, str]:
        return {"name": name}

    return RequestMetrics(inner)


def get(asgi: RequestMetrics, path: str, method: str = "GET") -> int:
    """One request through the ASGI app; its status code."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    asyncio.run(asgi(scope, receive, send))
    return int(sent[0]["status"])


def count(route: str, method: str, code: str) -> float:
    labels = {"route": route, "method": method, "code": code}
    return REGISTRY.get_sample_value("kurable_endpoint_requests_total", labels) or 0.0


def test_requests_are_counted_by_route_template_method_and_code() -> None:
    asgi = app()
    route = "/v1/namespaces/{namespace}/things/{name}"
    before = count(route, "GET", "200"), count("unmatched", "GET", "404")
    for name in ("run-1", "run-2", "run-3"):
        assert get(asgi, f"/v1/namespaces/ns/things/{name}") == 200
    assert get(asgi, "/no/such/path/run-4") == 404
    assert count(route, "GET", "200") == before[0] + 3
    assert count("unmatched", "GET", "404") == before[1] + 1
    samples = [
        s for f in REGISTRY.collect() if f.name.startswith("kurable_endpoint") for s in f.samples
    ]
    assert not any("run-" in v for s in samples for v in s.labels.values())


def test_an_unknown_method_is_one_label_value() -> None:
    asgi = app()
    get(asgi, "/v1/namespaces/ns/things/x", method="BREW")
    assert count("/v1/namespaces/{namespace}/things/{name}", "OTHER", "405") >= 1
