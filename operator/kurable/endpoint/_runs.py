"""Pure pieces of the workflow routes: durations, request digests, run names, the Run view."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from kurable.engine.names import derived_name, is_name, label_value

from ._models import Run, StartRun
from ._problems import Problem

FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Cancelled", "Invalid"})
"""Phases a run does not leave."""
MAX_WAIT_SECONDS = 300.0
"""The longest `?wait=` (seconds): long enough for a request/reply workflow, short enough
for proxies and load balancers not to cut the connection first."""
TEMPLATE_LABEL = "kurable.dev/template"
"""The endpoint labels the runs it starts with their template (`?template=` selects them)."""
KEY_ANNOTATION = "kurable.dev/idempotency-key"
"""The Idempotency-Key a run was started with."""
DIGEST_ANNOTATION = "kurable.dev/request-digest"
"""The SHA-256 of the start request (canonical JSON): the same key with another body is 409."""

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def wait_seconds(text: str | None) -> float | None:
    """`?wait=30s` (also `2m`, `1m30s`, `45`) in seconds, None when absent; at most
    MAX_WAIT_SECONDS. Raises Problem 400 for anything else."""
    if text is None or text == "":
        return None
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise Problem(
            400, "invalid-request", f"wait={text!r} is not a duration; use e.g. 30s, 2m or 1m30s"
        )
    minutes, seconds = match.groups()
    total = float(minutes or 0) * 60 + float(seconds or 0)
    if total > MAX_WAIT_SECONDS:
        raise Problem(
            400,
            "invalid-request",
            f"wait={text!r} is longer than {MAX_WAIT_SECONDS:.0f}s; wait less and ask again "
            "(GET the run, or follow its events)",
        )
    return total


def request_digest(body: StartRun) -> str:
    """The SHA-256 (hex) of the start request's canonical JSON (keys sorted, no spaces)."""
    wire = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(
        json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def run_name(body: StartRun, idempotency_key: str | None) -> str | None:
    """The run's name: the body's, else derived from the Idempotency-Key, else None
    (the API server generates one). Raises Problem 422 for a name Kubernetes refuses."""
    if body.name is not None:
        if not is_name(body.name, 253):
            raise Problem(
                422,
                "invalid-request",
                f"name {body.name!r} is not a Kubernetes object name (lowercase letters, "
                "digits, '-' and '.', starting and ending alphanumeric)",
                errors=[{"pointer": "/name", "detail": "not a DNS-1123 subdomain"}],
            )
        return body.name
    if idempotency_key:
        return derived_name(idempotency_key)
    return None


def workflow_object(
    body: StartRun, name: str | None, idempotency_key: str | None
) -> dict[str, Any]:
    """The Workflow to create for a start request."""
    template = body.template_ref.name
    metadata: dict[str, Any] = {
        "labels": {**(body.labels or {}), TEMPLATE_LABEL: label_value(template)},
        "annotations": {DIGEST_ANNOTATION: request_digest(body)},
    }
    if idempotency_key:
        metadata["annotations"][KEY_ANNOTATION] = idempotency_key
    if name is not None:
        metadata["name"] = name
    else:
        metadata["generateName"] = derived_name(template, limit=52) + "-"
    spec: dict[str, Any] = {"templateRef": {"name": template}}
    if body.input is not None:
        spec["input"] = body.input
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": spec,
    }


def run_view(obj: dict[str, Any]) -> Run:
    """What the endpoint shows of a Workflow object."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return Run(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        template=(spec.get("templateRef") or {}).get("name"),
        labels=meta.get("labels") or {},
        suspend=bool(spec.get("suspend")),
        cancel=bool(spec.get("cancel")),
        phase=status.get("phase"),
        reason=status.get("reason"),
        message=status.get("message"),
        current_step=status.get("currentStep"),
        steps=status.get("steps") or [],
        output=status.get("output"),
        error=status.get("error"),
        conditions=status.get("conditions") or [],
        created_at=meta.get("creationTimestamp"),
        started_at=status.get("startedAt"),
        finished_at=status.get("finishedAt"),
    )


def finished(obj: dict[str, Any]) -> bool:
    """Whether the run has ended (its phase is final)."""
    return (obj.get("status") or {}).get("phase") in FINISHED_PHASES
