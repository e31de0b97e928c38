"""Workflow routes: start runs (idempotent by Idempotency-Key, optionally waiting for the
result), read and list them, their journal and its live stream (SSE), signal, suspend,
resume and cancel them.

Runs are Workflow objects: the endpoint creates and patches them with its own
ServiceAccount after the caller's SubjectAccessReview allowed the request; the operator
does the rest. Journals are read from etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW
from kurable.engine.records import SignalReceived
from kurable.engine.signals import ENDPOINT_PREFIX, SIGNAL_PREFIX, canonical
from kurable.engine.tracecontext import TRACEPARENT_ANNOTATION, parse_traceparent
from kurable.executor.errors import api_error_message
from kurable.store import keys
from kurable.store import signals as signal_keys
from kurable.store.journal import Journal

from . import _access as access
from ._auth import API_ERRORS, RETRY_AFTER_SECONDS
from ._backend import ETCD_ERRORS, Backend, outage
from ._common import Caller, Server, allow
from ._models import Page, Run, SignalAccepted, StartRun
from ._problems import Problem
from ._runs import (
    DIGEST_ANNOTATION,
    finished,
    request_digest,
    run_name,
    run_view,
    wait_seconds,
    workflow_object,
)

router = APIRouter(prefix="/v1/namespaces/{namespace}/workflows", tags=["workflows"])

MAX_PAGE = 1000
"""The most items one page holds."""
POLL_SECONDS = 0.5
"""How often an event stream looks for new journal records when it cannot watch them
(and how often a signal looks whether the previous send was consumed)."""
HEARTBEAT_SECONDS = 15.0
"""An event stream sends a comment this often when nothing happens (proxies keep it open)."""
SIGNAL_PENDING_SECONDS = 10.0
"""How long a signal waits for the previous send of the same signal to be consumed."""
SIGNAL_CLAIM_SECONDS = SIGNAL_PENDING_SECONDS + 20.0
"""How old an undelivered Idempotency-Key claim must be before a resend delivers the
signal again: older than any send still in flight (which waits SIGNAL_PENDING_SECONDS at
most, plus the API server's answer)."""
FINAL_RECORD = "WorkflowFinished"


def _run_location(namespace: str, name: str) -> str:
    return f"/v1/namespaces/{namespace}/workflows/{name}"


def _not_found(namespace: str, name: str) -> Problem:
    return Problem(404, "not-found", f'Workflow "{name}" does not exist in namespace {namespace}')


async def _run(server: Backend, namespace: str, name: str) -> dict[str, Any]:
    obj = await server.get_object(WORKFLOW.plural, namespace, name)
    if obj is None:
        raise _not_found(namespace, name)
    return obj


def _api_problem(error: k8s.ApiException) -> Exception:
    """The API server refusing a write the caller asked for (its message, as 400, 404, 409
    or 422); any other refusal (the endpoint's own ServiceAccount may not) is the error
    itself, a 500."""
    if error.status not in (400, 404, 409, 422):
        return error
    kind = {404: "not-found", 409: "conflict"}.get(error.status, "invalid-request")
    return Problem(error.status, kind, api_error_message(error))


# -- start ---------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=Run,
    response_model_by_alias=True,
    responses={
        200: {"model": Run, "description": "the run this Idempotency-Key started before"},
        202: {"model": Run, "description": "?wait ran out: the run so far"},
        409: {"description": "the Idempotency-Key (or name) was used for another request"},
    },
)
async def start_run(
    namespace: str,
    body: StartRun,
    identity: Caller,
    server: Server,
    idempotency_key: Annotated[
        str | None,
        Header(description="Names the run: the same key and body return the same run"),
    ] = None,
    wait: Annotated[
        str | None,
        Query(description="wait this long (e.g. 30s) for the run to finish"),
    ] = None,
    traceparent: Annotated[
        str | None,
        Header(description="W3C trace context: the run's trace continues this one"),
    ] = None,
) -> Response:
    """Start a run of `templateRef` with `input`: 201 + Location; 200 for a resend."""
    await allow(server, identity, access.start_run(namespace))
    timeout = wait_seconds(wait)
    name = run_name(body, idempotency_key)
    manifest = workflow_object(body, name, idempotency_key)
    parent = parse_traceparent(traceparent)
    if parent is not None:  # journaled by the operator in WorkflowStarted
        manifest["metadata"]["annotations"][TRACEPARENT_ANNOTATION] = parent.header()
    status = 201
    try:
        with outage():
            obj = await server.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, WORKFLOW.plural, manifest
            )
    except k8s.ApiException as e:
        if e.status != 409 or name is None:
            raise _api_problem(e) from None
        obj = await _run(server, namespace, name)
        digest = (obj["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION)
        if digest != request_digest(body):
            raise Problem(
                409,
                "conflict",
                f'run "{name}" exists and was started by another request; a resend must '
                "carry the same body, a new request a new Idempotency-Key",
            ) from None
        status = 200
    if timeout is not None and not finished(obj):
        obj = await _wait_finished(server, obj, timeout)
        if not finished(obj):
            status = 202
    location = _run_location(namespace, obj["metadata"]["name"])
    return JSONResponse(
        run_view(obj).model_dump(mode="json", by_alias=True),
        status_code=status,
        headers={"Location": location},
    )


async def _wait_finished(server: Backend, obj: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The run once finished, or as last seen after `seconds` (a watch on the one object)."""
    meta = obj["metadata"]
    deadline = time.monotonic() + seconds
    latest = obj
    version = meta.get("resourceVersion")
    while time.monotonic() < deadline and not finished(latest):
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(remaining):
                async with watch.Watch() as stream:
                    async for event in stream.stream(
                        server.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        meta["namespace"],
                        WORKFLOW.plural,
                        field_selector=f"metadata.name={meta['name']}",
                        resource_version=version,
                        timeout_seconds=max(1, int(remaining) + 1),
                        allow_watch_bookmarks=False,
                    ):
                        changed = event.get("object")
                        if event.get("type") in ("ADDED", "MODIFIED") and isinstance(changed, dict):
                            latest = changed
                            version = changed["metadata"].get("resourceVersion", version)
                            if finished(latest):
                                return latest
                        elif event.get("type") == "DELETED":
                            return latest
        except TimeoutError:
            break
        except k8s.ApiException as e:
            if e.status != 410:  # 410: the version is too old: watch from a fresh read
                raise
            latest = await _run(server, meta["namespace"], meta["name"])
            version = latest["metadata"].get("resourceVersion")
    return latest


# -- read ----------------------------------------------------------------------------


@router.get("/{name}", response_model=Run, response_model_by_alias=True)
async def get_run(namespace: str, name: str, identity: Caller, server: Server) -> Run:
    """The run: phase, steps, output, error, conditions."""
    await allow(server, identity, access.read_run(namespace, name))
    return run_view(await _run(server, namespace, name))


@router.get("", response_model=Page, response_model_by_alias=True)
async def list_runs(
    namespace: str,
    identity: Caller,
    server: Server,
    label_selector: Annotated[str | None, Query(alias="labelSelector")] = None,
    phase: Annotated[str | None, Query(description="only runs in this phase")] = None,
    template: Annotated[str | None, Query(description="only runs of this template")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    continue_: Annotated[str | None, Query(alias="continue")] = None,
) -> Page:
    """Runs, a page at a time (the API server's `continue` token); `phase` and `template`
    filter within each page, so a page may hold fewer than `limit` runs."""
    await allow(server, identity, access.list_runs(namespace))
    kwargs: dict[str, Any] = {"limit": limit}
    if label_selector:
        kwargs["label_selector"] = label_selector
    if continue_:
        kwargs["_continue"] = continue_
    try:
        with outage():
            listing = await server.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, WORKFLOW.plural, **kwargs
            )
    except k8s.ApiException as e:
        if e.status in (400, 410, 422):
            raise Problem(400, "invalid-request", api_error_message(e)) from None
        raise
    items = []
    for obj in listing.get("items") or []:
        run = run_view(obj)
        if phase is not None and run.phase != phase:
            continue
        if template is not None and run.template != template:
            continue
        items.append(run.model_dump(mode="json", by_alias=True))
    token = (listing.get("metadata") or {}).get("continue") or None
    return Page(items=items, continue_=token)


@router.get("/{name}/history", response_model=Page, response_model_by_alias=True)
async def run_history(
    namespace: str,
    name: str,
    identity: Caller,
    server: Server,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    continue_: Annotated[str | None, Query(alias="continue")] = None,
) -> Page:
    """The run's journal from etcd, oldest first (`{seq, type, at, step?, data?}` each)."""
    await allow(server, identity, access.read_run(namespace, name))
    obj = await _run(server, namespace, name)
    after = _seq_token(continue_)
    with outage():
        records, _ = await Journal(server.etcd, server.prefix).load(
            obj["metadata"]["uid"], after=after
        )
    page = records[:limit]
    token = str(page[-1].seq) if len(records) > limit else None
    return Page(items=[r.to_json() for r in page], continue_=token)


def _seq_token(token: str | None) -> int:
    if token is None or token == "":
        return -1
    if not token.lstrip("-").isdigit():
        raise Problem(400, "invalid-request", f"{token!r} is not a token this endpoint gave")
    return int(token)


@router.get(
    "/{name}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def run_events(
    namespace: str,
    name: str,
    request: Request,
    identity: Caller,
    server: Server,
    last_event_id: Annotated[
        str | None,
        Header(description="resume after this record (the `id` of the last event seen)"),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: one event per committed journal record (`id` = its seq, `event`
    = its type, `data` = the record), until the run's final record."""
    await allow(server, identity, access.read_run(namespace, name))
    obj = await _run(server, namespace, name)
    after = _seq_token(last_event_id)
    uid = obj["metadata"]["uid"]
    journal = Journal(server.etcd, server.prefix)

    async def stream() -> AsyncIterator[bytes]:
        last = after
        async with _JournalWatch(server, uid) as changes:
            while not await request.is_disconnected():
                try:
                    with outage():
                        records, revision = await journal.load(uid, after=last)
                except Problem:
                    records, revision = [], None  # etcd away: keep the stream, try again
                for record in records:
                    last = record.seq
                    payload = json.dumps(record.to_json(), separators=(",", ":"))
                    yield f"id: {record.seq}\nevent: {record.type}\ndata: {payload}\n\n".encode()
                    if record.type == FINAL_RECORD:
                        return
                if not await changes.wait(revision, HEARTBEAT_SECONDS):
                    yield b": waiting\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _JournalWatch:
    """Wakes an event stream when its run's journal changes: an etcd watch on the
    journal's prefix from the revision last read. Without a working watch (etcd away, the
    watch cancelled) it falls back to waking every POLL_SECONDS, so that a record is
    never missed: each wake-up reads everything after the last record sent."""

    def __init__(self, server: Backend, uid: str) -> None:
        self.server = server
        self.uid = uid
        self.changed = asyncio.Event()
        self._watch: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _JournalWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def wait(self, revision: int | None, seconds: float) -> bool:
        """After a read at `revision` (None: the read failed): wait until the journal
        changes after it (True) or `seconds` pass (False). A wake-up may be
        spurious; the caller reads again either way."""
        if self._reader is None or self._reader.done():
            await self._stop()
            if revision is not None:
                with contextlib.suppress(*ETCD_ERRORS, *API_ERRORS):
                    prefix = keys.journal(self.server.prefix, self.uid).encode()
                    self._watch = await self.server.etcd.watch_prefix(
                        prefix, start_revision=revision + 1
                    )
                    self.changed.clear()
                    self._reader = asyncio.create_task(self._read(self._watch))
        if self._reader is None or self._reader.done():
            await asyncio.sleep(POLL_SECONDS)  # no watch: poll
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.changed.wait()
        except TimeoutError:
            return False
        self.changed.clear()
        return True

    async def _read(self, watch: Any) -> None:
        async for _ in watch:
            self.changed.set()

    async def _stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._watch is not None:
            with contextlib.suppress(Exception):
                await self._watch.cancel()
            self._watch = None


# -- signal and control -----------------------------------------------------------------


@router.post("/{name}/signals/{signal}", response_model=SignalAccepted, status_code=202)
async def signal_run(
    namespace: str,
    name: str,
    signal: str,
    identity: Caller,
    server: Server,
    payload: Annotated[Any, Body(description="the signal's payload: any JSON")] = None,
    idempotency_key: Annotated[
        str | None, Header(description="a resend with the same key is a no-op")
    ] = None,
) -> SignalAccepted:
    """Send `signal` with the body as its payload (the run's `kurable.dev/signal.NAME`
    annotation, with `kurable.dev/signal-endpoint.NAME` naming the endpoint as its source;
    the operator journals both and removes them). 202: handed to the run.

    With an Idempotency-Key the key is claimed in etcd before the annotation is written
    and marked delivered after; a resend finding the claim undelivered (an endpoint that
    died in between) looks for the send on the run and in its journal and delivers it
    again when it is in neither, so a send is never lost nor, once seen, repeated."""
    await allow(server, identity, access.signal_run(namespace, name))
    obj = await _run(server, namespace, name)
    uid = obj["metadata"]["uid"]
    text = canonical(payload)
    digest = signal_keys.key_digest(idempotency_key) if idempotency_key else ""
    claim: dict[str, Any] = {}
    if idempotency_key:
        claim = {"signal": signal, "payload": text, "at": time.time()}
        with outage():
            first = await signal_keys.claim_signal_key(
                server.etcd, server.prefix, uid, idempotency_key, claim
            )
        if first is not None:
            if (first.get("signal"), first.get("payload")) != (signal, text):
                raise Problem(
                    409,
                    "conflict",
                    f"Idempotency-Key {idempotency_key!r} was used for another signal or "
                    "payload of this run; a resend must carry the same, a new signal a new key",
                )
            if first.get("delivered") or await _arrived(server, obj, signal, digest):
                return SignalAccepted(signal=signal, duplicate=True)
            if time.time() - float(first.get("at") or 0) < SIGNAL_CLAIM_SECONDS:
                raise Problem(
                    503,
                    "busy",
                    f"the first send with Idempotency-Key {idempotency_key!r} is still in "
                    "flight; send again later (with the same key)",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            with outage():
                won = await signal_keys.retake_signal_key(
                    server.etcd, server.prefix, uid, idempotency_key, first, claim
                )
            if not won:  # another resend re-delivers it
                return SignalAccepted(signal=signal, duplicate=True)
    try:
        await _annotate_signal(server, obj, signal, text, digest)
    except BaseException:
        if idempotency_key:
            with outage():
                await signal_keys.release_signal_key(
                    server.etcd, server.prefix, uid, idempotency_key
                )
        raise
    if idempotency_key:
        with outage():
            await signal_keys.settle_signal_key(
                server.etcd, server.prefix, uid, idempotency_key, claim
            )
    return SignalAccepted(signal=signal)


async def _arrived(server: Backend, obj: dict[str, Any], signal: str, digest: str) -> bool:
    """Whether the send with Idempotency-Key hash `digest` reached the run: its annotation
    is on the object (not consumed yet), or the journal holds it (consumed)."""
    fresh = await _run(server, obj["metadata"]["namespace"], obj["metadata"]["name"])
    if (fresh["metadata"].get("annotations") or {}).get(ENDPOINT_PREFIX + signal) == digest:
        return True
    with outage():
        records, _ = await Journal(server.etcd, server.prefix).load(obj["metadata"]["uid"])
    return any(
        isinstance(r.data, SignalReceived) and r.data.idempotency_key == digest for r in records
    )


async def _annotate_signal(
    server: Backend, obj: dict[str, Any], signal: str, text: str, digest: str
) -> None:
    """Write the annotation (and the endpoint's beside it) once no earlier send of the same
    signal waits on the object (overwriting it would lose that send); conditional on the
    version read."""
    meta = obj["metadata"]
    key = SIGNAL_PREFIX + signal
    deadline = time.monotonic() + SIGNAL_PENDING_SECONDS
    while True:
        annotations = meta.get("annotations") or {}
        if key not in annotations:
            body = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {key: text, ENDPOINT_PREFIX + signal: digest},
                }
            }
            try:
                with outage():
                    await server.custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        meta["namespace"],
                        WORKFLOW.plural,
                        meta["name"],
                        body,
                        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                    )
                return
            except k8s.ApiException as e:
                if e.status == 404:
                    raise _not_found(meta["namespace"], meta["name"]) from None
                if e.status != 409:
                    raise _api_problem(e) from None
        if time.monotonic() > deadline:
            raise Problem(
                503,
                "busy",
                f"an earlier send of signal {signal!r} is still waiting for the operator; "
                "send again later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        await asyncio.sleep(POLL_SECONDS)
        meta = (await _run(server, meta["namespace"], meta["name"]))["metadata"]


async def _patch_spec(
    server: Backend, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    try:
        with outage():
            obj: dict[str, Any] = await server.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                WORKFLOW.plural,
                name,
                {"spec": spec},
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
    except k8s.ApiException as e:
        if e.status == 404:
            raise _not_found(namespace, name) from None
        raise _api_problem(e) from None
    return obj


@router.post("/{name}/suspend", response_model=Run, response_model_by_alias=True)
async def suspend_run(namespace: str, name: str, identity: Caller, server: Server) -> Run:
    """Pause the run before its next step (`spec.suspend: true`)."""
    await allow(server, identity, access.control_run(namespace, name))
    return run_view(await _patch_spec(server, namespace, name, {"suspend": True}))


@router.post("/{name}/resume", response_model=Run, response_model_by_alias=True)
async def resume_run(namespace: str, name: str, identity: Caller, server: Server) -> Run:
    """Go on after a suspend (`spec.suspend: false`)."""
    await allow(server, identity, access.control_run(namespace, name))
    return run_view(await _patch_spec(server, namespace, name, {"suspend": False}))


@router.post("/{name}/cancel", response_model=Run, response_model_by_alias=True)
async def cancel_run(namespace: str, name: str, identity: Caller, server: Server) -> Run:
    """Cancel the run (`spec.cancel: true`): compensations run, then phase Cancelled."""
    await allow(server, identity, access.control_run(namespace, name))
    return run_view(await _patch_spec(server, namespace, name, {"cancel": True}))
