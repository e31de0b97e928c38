"""Step actions with effects outside the journal: HTTP calls and child workflows.

Each performer gets the attempt to run (`decide.Act`) and answers (output, error).
They may run more than once for one attempt (a crash between acting and committing),
so each sends a stable idempotency key: `<workflow uid>/<step>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import (
    API_VERSION,
    ENTITY,
    ENTITY_TYPE,
    GROUP,
    VERSION,
    WORKFLOW,
    parse_duration,
)
from kurable.client import http_handler, status_projector
from kurable.engine import expressions
from kurable.engine.decide import Act, StepError
from kurable.engine.entities import CommandRejected
from kurable.engine.journal import TERMINAL_PHASES
from kurable.store.entities import EntityBusy, HandlerUnavailable, execute_command

from ._runtime import Runtime

DEFAULT_HTTP_TIMEOUT = 30.0
CHILD_POLL_SECONDS = 30.0
"""A child's status changes wake the parent at once; this is only the fallback poll."""

Outcome = tuple[Any, StepError | None]


@dataclass(frozen=True)
class RunRef:
    """The run an action belongs to."""

    name: str
    namespace: str
    uid: str


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    """Run one attempt of `act.step`; never raises for failures a user can cause."""
    performers: dict[str, Callable[[], Awaitable[Outcome]]] = {
        "http": lambda: _http(runtime, run, act, context),
        "workflow": lambda: _child(runtime, run, act, context),
        "entity": lambda: _entity(runtime, run, act, context),
    }
    performer = performers.get(act.step.action)
    if performer is None:
        return None, StepError(
            "Unsupported",
            f"{act.step.name}: step kind {act.step.action!r} is not executed by this "
            "operator version",
            retryable=False,
        )
    try:
        if act.deadline is None:
            return await performer()
        remaining = (act.deadline - datetime.now(UTC)).total_seconds()
        return await asyncio.wait_for(performer(), max(0.0, remaining))
    except TimeoutError:
        return None, StepError("Timeout", f"attempt {act.attempt} timed out")
    except expressions.ExpressionError as e:
        return None, StepError("ExpressionError", str(e))


async def _http(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    spec = act.step.http
    assert spec is not None
    where = f"{act.step.name}.http"
    url = expressions.render(spec.url, context, f"{where}.url")
    headers = {"Idempotency-Key": act.idempotency_key(run.uid)}
    for header in spec.headers or []:
        if header.value_from is not None:
            ref = header.value_from.secret_key_ref
            value = await _secret_value(runtime, run.namespace, ref.name, ref.key)
            if value is None:
                return None, StepError(
                    "SecretNotFound",
                    f"{where}.headers[{header.name}]: key {ref.key!r} of Secret {ref.name!r} "
                    f"not found in namespace {run.namespace}",
                )
        else:
            value = str(expressions.render(header.value, context, f"{where}.headers"))
        headers[header.name] = value
    body = expressions.render(spec.body, context, f"{where}.body")
    timeout = parse_duration(spec.timeout).total_seconds() if spec.timeout else None
    try:
        async with runtime.http.request(
            spec.method,
            url,
            headers=headers,
            json=body if body is not None and spec.method not in ("GET", "HEAD") else None,
            timeout=aiohttp.ClientTimeout(total=timeout or DEFAULT_HTTP_TIMEOUT),
        ) as response:
            text = await response.text()
            status = response.status
    except TimeoutError:
        return None, StepError("Timeout", f"{spec.method} {url}: no answer in time")
    except aiohttp.ClientError as e:
        return None, StepError("ConnectionError", f"{spec.method} {url}: {e}")
    if 200 <= status < 300:
        try:
            return (json.loads(text) if text else None), None
        except json.JSONDecodeError:
            return text, None
    detail = f"{spec.method} {url} answered {status}: {text[:200]}"
    if status >= 500 or status == 429:
        return None, StepError("HttpServerError", detail)
    listed = status in (spec.retry_on_status or [])
    return None, StepError("HttpClientError", detail, retryable=listed or None)


async def _secret_value(runtime: Runtime, namespace: str, name: str, key: str) -> str | None:
    try:
        secret = await k8s.CoreV1Api(runtime.api).read_namespaced_secret(name, namespace)
    except k8s.ApiException as e:
        if e.status == 404:
            return None
        raise
    raw = (secret.data or {}).get(key)
    return base64.b64decode(raw).decode() if raw is not None else None


async def _entity(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    """Send a command exactly once: its id is the step's idempotency key, so a step
    executed again after a crash gets the original reply and changes nothing."""
    spec = act.step.entity
    assert spec is not None
    where = f"{act.step.name}.entity"
    name = expressions.render(spec.name, context, f"{where}.name")
    entity = await runtime.get(ENTITY, run.namespace, str(name))
    if entity is None:
        return None, StepError(
            "EntityNotFound", f"{where}: Entity {name!r} not found in namespace {run.namespace}"
        )
    type_name = (entity.get("spec") or {}).get("type", "")
    entity_type = await runtime.get(ENTITY_TYPE, run.namespace, type_name)
    if entity_type is None:
        return None, StepError(
            "EntityTypeNotFound", f"{where}: EntityType {type_name!r} of Entity {name!r} not found"
        )
    command_input = expressions.render(spec.input, context, f"{where}.input")
    try:
        result = await execute_command(
            runtime.etcd,
            runtime.prefix,
            entity,
            entity_type.get("spec") or {},
            spec.command,
            command_input,
            act.idempotency_key(run.uid),
            on_committed=status_projector(runtime.api),
            ask=http_handler(runtime.http),
        )
    except HandlerUnavailable as e:
        return None, StepError("Unavailable", f"{name}.{spec.command}: {e}")
    except CommandRejected as e:
        return None, StepError("CommandRejected", f"{name}.{spec.command}: {e}", retryable=False)
    except EntityBusy as e:
        return None, StepError("Unavailable", f"{name}.{spec.command}: {e}")
    return result.reply, None


def child_name(parent: str, step: str) -> str:
    """A deterministic child name (so a re-executed step finds its child again)."""
    name = f"{parent}-{step}".lower().replace("_", "-")
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54]}-{digest}"


async def _child(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    spec = act.step.workflow
    assert spec is not None
    api = k8s.CustomObjectsApi(runtime.api)
    name = child_name(run.name, act.step.name)
    body = {
        "apiVersion": API_VERSION,
        "kind": WORKFLOW.kind,
        "metadata": {
            "name": name,
            "labels": {"kurable.dev/parent": run.name},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": WORKFLOW.kind,
                    "name": run.name,
                    "uid": run.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "templateRef": {"name": spec.template_ref.name},
            "input": expressions.render(spec.input, context, f"{act.step.name}.workflow.input"),
        },
    }
    try:
        await api.create_namespaced_custom_object(
            GROUP, VERSION, run.namespace, WORKFLOW.plural, body
        )
    except k8s.ApiException as e:
        if e.status != 409:  # 409: created by an earlier execution of this attempt
            raise
    wakeup = runtime.wakeup(run.uid)  # the child's status changes wake its parent
    try:
        return await _await_child(api, run, name, wakeup)
    finally:
        runtime.unsubscribe(run.uid, wakeup)


async def _await_child(
    api: k8s.CustomObjectsApi, run: RunRef, name: str, wakeup: asyncio.Event
) -> Outcome:
    while True:
        child = await api.get_namespaced_custom_object(
            GROUP, VERSION, run.namespace, WORKFLOW.plural, name
        )
        owners = [o.get("uid") for o in child["metadata"].get("ownerReferences") or []]
        if run.uid not in owners:
            return None, StepError(
                "ChildConflict", f"a Workflow named {name} exists and is not this run's child"
            )
        status = child.get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            if status["phase"] == "Succeeded":
                return status.get("output"), None
            return None, StepError(
                "ChildFailed",
                f"child workflow {name} ended {status['phase']}: {status.get('message', '')}",
                retryable=False,
            )
        wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), CHILD_POLL_SECONDS)
