"""The body limit: 413 before reading past the limit; bodies within it pass unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kurable.endpoint._limits import BodyLimit


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that answers with the body it read."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class Client:
    """Sends one request to an ASGI app as chunks; records what was read and answered."""

    def __init__(self, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
        self.chunks = chunks
        self.headers = headers
        self.read = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.read < len(self.chunks):
            self.read += 1
            return {
                "type": "http.request",
                "body": self.chunks[self.read - 1],
                "more_body": self.read < len(self.chunks),
            }
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def call(self, app: BodyLimit) -> tuple[int, bytes]:
        scope = {"type": "http", "path": "/v1/x", "headers": self.headers}
        await app(scope, self.receive, self.send)
        return self.sent[0]["status"], b"".join(m.get("body", b"") for m in self.sent[1:])


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    client = Client([b"x" * 11], [(b"content-length", b"11")])
    status, body = await client.call(BodyLimit(echo, max_bytes=10))
    assert status == 413
    assert client.read == 0
    problem = json.loads(body)
    assert problem["status"] == 413
    assert problem["limit"] == 10


async def test_a_chunked_body_is_read_only_until_it_passes_the_limit() -> None:
    client = Client([b"x" * 6, b"x" * 6, b"x" * 6, b"x" * 6], [])
    status, _ = await client.call(BodyLimit(echo, max_bytes=10))
    assert status == 413
    assert client.read == 2


async def test_a_body_at_the_limit_reaches_the_app_whole() -> None:
    client = Client([b"12345", b"67890"], [(b"content-length", b"10")])
    status, body = await client.call(BodyLimit(echo, max_bytes=10))
    assert (status, body) == (200, b"1234567890")


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        BodyLimit(echo, max_bytes=-1)
