"""A local HTTP service for workflow `http` steps: it counts requests per
Idempotency-Key and can fail, or hold, calls on purpose."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from aiohttp import web


class Service:
    """A local HTTP service that fails the first `failures` calls of each key, and
    counts requests per Idempotency-Key. With `gather=n`, every request is held until
    n requests are in flight at once (or 20 s pass); `peak` is the most seen at once."""

    def __init__(
        self, failures: int = 0, status: int = 503, gather: int = 0, padding: int = 0
    ) -> None:
        self.failures = failures
        self.padding = padding
        """With `padding=n`, each answer carries `"blob": "x" * n` (a large response)."""
        self.status = status
        self.gather = gather
        self.in_flight = 0
        self.peak = 0
        self._gathered: asyncio.Event | None = None
        self.keys: Counter[str] = Counter()
        self.seen: set[tuple[str, str]] = set()
        """(path, Idempotency-Key) of every request."""
        self.bodies: list[Any] = []
        self.traceparents: list[str | None] = []
        """The `traceparent` header of every request (None: not sent)."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        self.keys[key] += 1
        self.seen.add((request.path, key))
        self.traceparents.append(request.headers.get("traceparent"))
        if request.can_read_body:
            self.bodies.append(await request.json())
        if self.gather:
            await self._hold()
        if self.keys[key] <= self.failures:
            return web.json_response({"error": "try again"}, status=self.status)
        answer: dict[str, Any] = {
            "path": request.path,
            "calls": self.keys[key],
            "auth": request.headers.get("Authorization"),
        }
        if self.padding:
            answer["blob"] = "x" * self.padding
        return web.json_response(answer)

    async def _hold(self) -> None:
        self._gathered = self._gathered or asyncio.Event()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.gather:
            self._gathered.set()
        try:
            await asyncio.wait_for(self._gathered.wait(), 20)
        except TimeoutError:
            pass
        finally:
            self.in_flight -= 1

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Service:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"
