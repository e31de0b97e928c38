"""The `http` step: call a service, with the attempt's idempotency key as a header."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import parse_duration
from kurable.engine import expressions
from kurable.engine.decide import Act, StepError
from kurable.engine.messages import EXCERPT_LIMIT, one_line

from ..runtime import Runtime
from ..tracing import attempt_traceparent
from .outcome import Outcome, RunRef

DEFAULT_HTTP_TIMEOUT = 30.0
"""Seconds an HTTP step waits for its answer when the step names no `timeout`."""


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    spec = act.step.http
    assert spec is not None
    where = f"{act.step.name}.http"
    url = expressions.render(spec.url, context, f"{where}.url")
    headers = {"Idempotency-Key": act.idempotency_key(run.uid)}
    traceparent = attempt_traceparent()
    if traceparent is not None:
        headers["traceparent"] = traceparent  # the attempt's span is the callee's parent
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
        return None, StepError(
            "ConnectionError", f"{spec.method} {url}: {one_line(e, EXCERPT_LIMIT)}"
        )
    if 200 <= status < 300:
        try:
            return (json.loads(text) if text else None), None
        except json.JSONDecodeError:
            return text, None
    detail = f"{spec.method} {url} answered {status}: {one_line(text, EXCERPT_LIMIT)}"
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
