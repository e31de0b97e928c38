"""`AsyncClient` and its blocking twin `Client`: Kurable's HTTP API from Python.

Both speak to the endpoint (`kurable endpoint`) only; Kubernetes RBAC decides there what
the caller may do. Each operation is a `Call` (method, path, body, query, headers) that
one `request` method sends and whose error answers become typed exceptions
(`kurable.client._errors`), so a new route is one more `Call`:

    from kurable.client import Client

    with Client() as kurable:  # $KURABLE_ENDPOINT; $KURABLE_TOKEN or the kubeconfig's user
        balance = kurable.send_command("shop", "alice", "withdraw", {"amount": 10}, "order-7")
        run = kurable.start("shop", "checkout", {"order": 7}, wait=30)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ._credentials import Kubeconfig, TokenSource, endpoint_url
from ._errors import problem_error

DEFAULT_TIMEOUT = 60.0
"""Seconds a request may take (connect, each read); a waiting start adds its wait."""
NO_BODY: Any = object()


@dataclass(frozen=True)
class CommandReply:
    """An applied (or, `duplicate`, earlier applied) entity command."""

    reply: Any
    version: int
    """The entity's version right after the command."""
    duplicate: bool = False
    """The command id had been used for this command: nothing changed, the first reply."""


@dataclass(frozen=True)
class EntityState:
    """An Entity's current state (`GET .../entities/{name}`)."""

    namespace: str
    name: str
    type: str
    state: dict[str, Any]
    version: int
    last_event: dict[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of a run's stream: a journal record."""

    id: str
    type: str
    data: Any


@dataclass(frozen=True)
class Call:
    """One request to the endpoint: `path` is below the base URL (`/v1/...`)."""

    method: str
    path: str
    body: Any = NO_BODY
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    """Seconds for this call (default: the client's)."""


def _proxied() -> bool:
    """Whether the environment names a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, any
    case): then httpx's own transport serves, which applies them, and NO_PROXY, by
    httpx's rules."""
    found = getproxies()
    return any(found.get(scheme) for scheme in ("http", "https", "all"))


class _AiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, raising for aiohttp's connection errors the httpx errors
    httpx's own transport raises (it maps a refused connection to ConnectTimeout, a
    dropped one to ConnectTimeout too)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response: httpx.Response = await super().handle_async_request(request)
        except httpx.TransportError as e:
            cause = e.__cause__
            for theirs, ours in _CONNECTION_ERRORS:
                if isinstance(cause, theirs):
                    raise ours(str(e) or str(cause), request=request) from cause
            raise
        return response


_CONNECTION_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # before its base, ClientOSError
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx.ReadError),
)


def namespaced(namespace: str, *parts: str) -> str:
    """`/v1/namespaces/{namespace}/part/part...`, each segment percent-encoded."""
    return "/v1/namespaces/" + "/".join(quote(p, safe="") for p in (namespace, *parts))


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


class _Base:
    """What both clients share: the URL, the token, the default namespace, and the Calls."""

    def __init__(
        self,
        endpoint: str | None,
        token: str | None,
        namespace: str | None,
        kubeconfig: str | None,
        context: str | None,
        timeout: float,
    ) -> None:
        self.url = endpoint_url(endpoint)
        config = Kubeconfig.load(kubeconfig, context)
        self.tokens = TokenSource(token, config)
        self.default_namespace = namespace or config.namespace or "default"
        self.timeout = timeout

    def _ns(self, namespace: str | None) -> str:
        return namespace or self.default_namespace

    def _build(self, http: httpx.Client | httpx.AsyncClient, call: Call, token: str | None) -> Any:
        headers = {"Accept": "application/json", **call.headers}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = None
        if call.body is not NO_BODY:
            content = json.dumps(call.body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        timeout = call.timeout if call.timeout is not None else self.timeout
        return http.build_request(
            call.method,
            self.url + call.path,
            content=content,
            params=call.params or None,
            headers=headers,
            timeout=timeout,
        )

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        """The parsed JSON of a success, None for an empty one; raises the error's type."""
        if response.status_code >= 400:
            raise problem_error(
                response.status_code,
                response.headers.get("content-type", ""),
                response.content,
                response.headers.get("retry-after"),
            )
        if not response.content:
            return None
        return response.json()

    # -- the calls ---------------------------------------------------------------------

    def _command(
        self, namespace: str | None, entity: str, command: str, input: Any, command_id: str | None
    ) -> Call:
        return Call(
            "POST",
            namespaced(self._ns(namespace), "entities", entity, "commands", command),
            {"input": input},
            headers={"Idempotency-Key": command_id or f"client/{uuid.uuid4()}"},
        )

    def _start(
        self,
        namespace: str | None,
        template: str,
        input: Any,
        name: str | None,
        labels: dict[str, str] | None,
        idempotency_key: str | None,
        wait: float | None,
    ) -> Call:
        body: dict[str, Any] = {"templateRef": {"name": template}, "input": input}
        if name is not None:
            body["name"] = name
        if labels:
            body["labels"] = labels
        return Call(
            "POST",
            namespaced(self._ns(namespace), "workflows"),
            body,
            params={"wait": _duration(wait)} if wait is not None else {},
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
            timeout=self.timeout + wait if wait is not None else None,
        )

    def _signal(
        self,
        namespace: str | None,
        run: str,
        signal: str,
        payload: Any,
        idempotency_key: str | None,
    ) -> Call:
        return Call(
            "POST",
            namespaced(self._ns(namespace), "workflows", run, "signals", signal),
            payload,
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        )

    def _events_call(self, namespace: str | None, run: str, last_event_id: str | None) -> Call:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return Call(
            "GET", namespaced(self._ns(namespace), "workflows", run, "events"), headers=headers
        )


def _reply(raw: dict[str, Any]) -> CommandReply:
    return CommandReply(raw.get("reply"), int(raw["version"]), bool(raw.get("duplicate")))


def _state(raw: dict[str, Any]) -> EntityState:
    return EntityState(
        raw["namespace"],
        raw["name"],
        raw["type"],
        raw["state"],
        raw["version"],
        raw.get("lastEvent"),
    )


class _EventParser:
    """Server-Sent Events (the WHATWG format) line by line: `feed(line)` returns an Event
    at each blank line that ends one carrying data; comments (`: ...`) are ignored."""

    def __init__(self) -> None:
        self._id = ""
        self._type = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                self._type = "message"
                return None
            text = "\n".join(self._data)
            event = Event(self._id, self._type, json.loads(text) if text else None)
            self._type, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            self._id = value
        return None


class AsyncClient(_Base):
    """The endpoint's API on asyncio. See the module docstring for the sources of the URL
    and the token; `namespace` is the default for calls that pass None (else the
    kubeconfig context's, else `default`). Every method raises EndpointError subclasses
    for error answers, ClientError without an endpoint or usable credentials, and
    httpx.TransportError when the endpoint cannot be reached.

    Requests go through httpx's API on aiohttp's connection pool (httpx-aiohttp): httpx's
    own pool (httpcore on anyio) costs about 0.8 ms more per request on 2 cores
    (bench/results/endpoint.txt). httpx's own transport serves when the environment
    names a proxy (HTTPS_PROXY, ALL_PROXY...), and `transport` (tests) replaces either."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        namespace: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(endpoint, token, namespace, kubeconfig, context, timeout)
        if transport is None and not _proxied():
            transport = _AiohttpTransport()
        self.http = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _token(self) -> str | None:
        if self.tokens.runs_plugin:
            return await asyncio.to_thread(self.tokens.token)
        return self.tokens.token()

    async def send(self, call: Call, stream: bool = False) -> httpx.Response:
        """Send `call`; the response, whatever its status (a 401 with a credential
        plugin's token asks the plugin again and resends once)."""
        for attempt in range(2):
            request = self._build(self.http, call, await self._token())
            response = await self.http.send(request, stream=stream)
            if response.status_code != 401 or attempt or not self.tokens.renew():
                return response
            await response.aclose()
        raise AssertionError("unreachable")

    async def call(self, call: Call) -> Any:
        """Send `call`; its JSON answer, or the EndpointError its problem maps to."""
        return self._answer(await self.send(call))

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = NO_BODY,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Any route: `path` below the URL (`/v1/namespaces/...`); the JSON answer."""
        return await self.call(Call(method, path, json, params or {}, headers or {}))

    # -- entities ----------------------------------------------------------------------

    async def send_command(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> Any:
        """Send `command` to Entity `entity`; its reply. Raises CommandRejected (nothing
        changed), CommandConflict (`command_id` used for another command or input),
        NotFound, Forbidden, EntityBusy/Unavailable (not applied: resend with the same id).
        Without `command_id` a fresh one is made, so a retry of this call may apply
        twice: pass an id derived from the caller's own durable state for exactly once."""
        return (await self.execute(namespace, entity, command, input, command_id)).reply

    async def execute(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> CommandReply:
        """Like `send_command`, with the entity's version and whether it was a resend."""
        return _reply(await self.call(self._command(namespace, entity, command, input, command_id)))

    async def get_state(self, namespace: str | None, entity: str) -> EntityState:
        """The Entity's current state and version."""
        return _state(
            await self.call(Call("GET", namespaced(self._ns(namespace), "entities", entity)))
        )

    async def history(self, namespace: str | None, entity: str) -> list[dict[str, Any]]:
        """The Entity's event log, oldest first: `{type, data, commandId, at, version}`."""
        return await self._pages(namespaced(self._ns(namespace), "entities", entity, "events"))

    # -- workflows ---------------------------------------------------------------------

    async def start(
        self,
        namespace: str | None,
        template: str,
        input: Any = None,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """Start a run of WorkflowTemplate `template`; the run (`{name, phase, output,
        error, steps...}`). With `idempotency_key` a resend returns the same run (and
        another body with that key raises Conflict). With `wait` (seconds, at most 300)
        the answer comes when the run has finished or the wait ran out (its phase tells)."""
        call = self._start(namespace, template, input, name, labels, idempotency_key, wait)
        run: dict[str, Any] = await self.call(call)
        return run

    async def get_run(self, namespace: str | None, run: str) -> dict[str, Any]:
        """The run: phase, steps, output, error, conditions."""
        got: dict[str, Any] = await self.call(
            Call("GET", namespaced(self._ns(namespace), "workflows", run))
        )
        return got

    async def list_runs(
        self, namespace: str | None, params: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every run (all pages); `params`: `labelSelector`, `phase`, `template`."""
        return await self._pages(namespaced(self._ns(namespace), "workflows"), params)

    async def run_history(self, namespace: str | None, run: str) -> list[dict[str, Any]]:
        """The run's whole journal, oldest first (`{seq, type, at, step?, data?}` each)."""
        return await self._pages(namespaced(self._ns(namespace), "workflows", run, "history"))

    async def run_events(
        self, namespace: str | None, run: str, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        """The run's journal records as they commit (after `last_event_id`), until its
        WorkflowFinished record."""
        response = await self.send(self._events_call(namespace, run, last_event_id), stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                self._answer(response)
            parser = _EventParser()
            async for line in response.aiter_lines():
                event = parser.feed(line.rstrip("\r"))
                if event is not None:
                    yield event
        finally:
            await response.aclose()

    async def signal(
        self,
        namespace: str | None,
        run: str,
        signal: str,
        payload: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send `signal` with `payload` to the run; `{signal, duplicate}`. With
        `idempotency_key` a resend is a no-op (`duplicate: true`)."""
        sent: dict[str, Any] = await self.call(
            self._signal(namespace, run, signal, payload, idempotency_key)
        )
        return sent

    async def control(self, namespace: str | None, run: str, action: str) -> dict[str, Any]:
        """`suspend`, `resume` or `cancel` the run; the run after the change."""
        got: dict[str, Any] = await self.call(
            Call("POST", namespaced(self._ns(namespace), "workflows", run, action))
        )
        return got

    async def _pages(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": "1000"}
        while True:
            page = await self.call(Call("GET", path, params=query))
            items.extend(page["items"])
            if not page.get("continue"):
                return items
            query["continue"] = page["continue"]


class Client(_Base):
    """The blocking twin of AsyncClient (scripts, the CLI; safe inside a running event
    loop too). Same arguments, methods and errors."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        namespace: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(endpoint, token, namespace, kubeconfig, context, timeout)
        self.http = httpx.Client(transport=transport, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, call: Call, stream: bool = False) -> httpx.Response:
        """Send `call`; the response, whatever its status (see AsyncClient.send)."""
        for attempt in range(2):
            response = self.http.send(
                self._build(self.http, call, self.tokens.token()), stream=stream
            )
            if response.status_code != 401 or attempt or not self.tokens.renew():
                return response
            response.close()
        raise AssertionError("unreachable")

    def call(self, call: Call) -> Any:
        """Send `call`; its JSON answer, or the EndpointError its problem maps to."""
        return self._answer(self.send(call))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = NO_BODY,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Any route: `path` below the URL (`/v1/namespaces/...`); the JSON answer."""
        return self.call(Call(method, path, json, params or {}, headers or {}))

    def send_command(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> Any:
        """Send `command` to Entity `entity`; its reply (see AsyncClient.send_command)."""
        return self.execute(namespace, entity, command, input, command_id).reply

    def execute(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> CommandReply:
        """Like `send_command`, with the entity's version and whether it was a resend."""
        return _reply(self.call(self._command(namespace, entity, command, input, command_id)))

    def get_state(self, namespace: str | None, entity: str) -> EntityState:
        """The Entity's current state and version."""
        return _state(self.call(Call("GET", namespaced(self._ns(namespace), "entities", entity))))

    def history(self, namespace: str | None, entity: str) -> list[dict[str, Any]]:
        """The Entity's event log, oldest first."""
        return self._pages(namespaced(self._ns(namespace), "entities", entity, "events"))

    def start(
        self,
        namespace: str | None,
        template: str,
        input: Any = None,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """Start a run of `template`; the run (see AsyncClient.start)."""
        call = self._start(namespace, template, input, name, labels, idempotency_key, wait)
        run: dict[str, Any] = self.call(call)
        return run

    def get_run(self, namespace: str | None, run: str) -> dict[str, Any]:
        """The run: phase, steps, output, error, conditions."""
        got: dict[str, Any] = self.call(
            Call("GET", namespaced(self._ns(namespace), "workflows", run))
        )
        return got

    def list_runs(
        self, namespace: str | None, params: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every run (all pages); `params`: `labelSelector`, `phase`, `template`."""
        return self._pages(namespaced(self._ns(namespace), "workflows"), params)

    def run_history(self, namespace: str | None, run: str) -> list[dict[str, Any]]:
        """The run's whole journal, oldest first."""
        return self._pages(namespaced(self._ns(namespace), "workflows", run, "history"))

    def run_events(
        self, namespace: str | None, run: str, last_event_id: str | None = None
    ) -> Iterator[Event]:
        """The run's journal records as they commit (see AsyncClient.run_events)."""
        response = self.send(self._events_call(namespace, run, last_event_id), stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                self._answer(response)
            parser = _EventParser()
            for line in response.iter_lines():
                event = parser.feed(line.rstrip("\r"))
                if event is not None:
                    yield event
        finally:
            response.close()

    def signal(
        self,
        namespace: str | None,
        run: str,
        signal: str,
        payload: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send `signal` with `payload` to the run; `{signal, duplicate}`."""
        sent: dict[str, Any] = self.call(
            self._signal(namespace, run, signal, payload, idempotency_key)
        )
        return sent

    def control(self, namespace: str | None, run: str, action: str) -> dict[str, Any]:
        """`suspend`, `resume` or `cancel` the run; the run after the change."""
        got: dict[str, Any] = self.call(
            Call("POST", namespaced(self._ns(namespace), "workflows", run, action))
        )
        return got

    def _pages(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": "1000"}
        while True:
            page = self.call(Call("GET", path, params=query))
            items.extend(page["items"])
            if not page.get("continue"):
                return items
            query["continue"] = page["continue"]
