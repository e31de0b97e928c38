"""A TCP proxy whose open connections can be frozen: a watch that goes silent.

A watch stream that stops delivering without closing (a half-dead TCP connection, a
frozen load balancer) is the way operators most often stop reacting, and the hardest
to reproduce. Put this proxy between a client and the API server::

    with FreezableProxy(cp.server) as proxy:
        env = cp.env(server=proxy.url)        # a kubeconfig that points at the proxy
        ...                                   # start the operator with `env`
        proxy.freeze()   # open connections stop forwarding, and stay open
        ...              # new connections still work (the client may reconnect)
        proxy.thaw()     # the held bytes flow again

It forwards bytes and nothing else, so TLS is end to end: the API server's serving
certificate (issued for 127.0.0.1) verifies through a loopback proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

START_TIMEOUT = 10.0
CHUNK = 65536

T = TypeVar("T")


class _Connection:
    """One proxied connection; forwards while `flowing` is set."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []


class FreezableProxy:
    """A loopback TCP proxy to ``target`` (``host:port`` or a URL), in a thread of its own.

    :meth:`freeze` stops every connection open at that moment: no byte goes either
    way, nothing is closed. Connections opened later forward normally. :meth:`thaw`
    lets the frozen ones forward again. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, target: str) -> None:
        parts = urllib.parse.urlsplit(target if "//" in target else f"//{target}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"target {target!r}: expected host:port or a URL with a port")
        self.target = (parts.hostname, parts.port)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``: the proxy's address for an HTTPS client."""
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FreezableProxy:
        """Listen on a free loopback port (see :attr:`port`) and start forwarding."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="kurable-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("the proxy did not start")
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the thread."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()
        self._thread = None
        self._loop = None

    def __enter__(self) -> FreezableProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- freezing --------------------------------------------------------------------

    def freeze(self) -> int:
        """Stop forwarding on every open connection (they stay open); return how many."""

        async def freeze() -> int:
            for connection in self._connections:
                connection.flowing.clear()
            return len(self._connections)

        return self._call(freeze())

    def thaw(self) -> None:
        """Forward again on the connections :meth:`freeze` stopped."""

        async def thaw() -> None:
            for connection in self._connections:
                connection.flowing.set()

        self._call(thaw())

    @property
    def connections(self) -> int:
        """How many connections are open now (frozen ones included)."""
        return len(self._connections)

    # -- the forwarding, in the proxy's thread ---------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            raise RuntimeError("the proxy is not started: call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_TIMEOUT)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = _Connection()
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            connection.writers = [writer, up_writer]
            self._connections.add(connection)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, connection)),
                asyncio.create_task(self._pump(up_reader, writer, connection)),
            ]
            try:
                # Either side closing ends the connection (HTTP/1.1 and HTTP/2 clients
                # never half-close a connection they want answers on).
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
        finally:
            self._connections.discard(connection)
            for w in connection.writers or [writer]:
                w.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await connection.flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    return
                # Frozen while reading: hold the bytes until thawed.
                await connection.flowing.wait()
                writer.write(data)
                await writer.drain()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
