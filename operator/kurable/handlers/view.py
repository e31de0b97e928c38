"""View bindings: validate, materialize in this operator (for `view` steps), show progress.

A valid View is materialized by the operator as soon as it is applied; a timer patches
its status (offset, lag, rows, phase, conditions Ready/Building/Invalid) from this
replica's copy when it changed. With several replicas, the one owning the View's uid
(kurable.executor.shards) writes status; each keeps its own copy for its own steps.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import GROUP, VERSION, VIEW
from kurable.engine.conditions import updated_condition
from kurable.engine.journal import now_rfc3339
from kurable.executor.runtime import Runtime
from kurable.executor.views import Views, ViewState, verdict

from .operator import OperatorMemo

STATUS_SECONDS = 5.0
"""How often a View's status is brought up to date."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


def _views(runtime: Runtime) -> Views:
    if runtime.views is None:
        runtime.views = Views(runtime.etcd, runtime.prefix, runtime.settings.state_dir)
    return runtime.views


@kopf.on.resume(GROUP, VERSION, VIEW.plural)
@kopf.on.create(GROUP, VERSION, VIEW.plural)
@kopf.on.update(GROUP, VERSION, VIEW.plural, field="spec")
async def validate(
    body: kopf.Body, namespace: str | None, name: str, memo: OperatorMemo, **_: Any
) -> None:
    """Check every column expression and query; materialize the View when valid."""
    runtime = memo.executor.runtime
    assert namespace is not None, "Views are namespaced"
    plan, problems = verdict(namespace, name, body.get("spec") or {})
    if problems:
        message = "; ".join(str(p) for p in problems[:5])
        await _patch(runtime, body, {"phase": "Invalid", "message": message}, "Invalid", message)
        kopf.warn(body, reason="Invalid", message=message)
        await _views(runtime).forget(namespace, name)
        return
    await _views(runtime).serve(plan)
    await _show(runtime, body)


@kopf.timer(GROUP, VERSION, VIEW.plural, interval=STATUS_SECONDS, idle=STATUS_SECONDS)
async def progress(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """Bring the status up to date with this replica's copy."""
    runtime = memo.executor.runtime
    if runtime.shards.owns(body["metadata"]["uid"]):
        await _show(runtime, body)


@kopf.on.delete(GROUP, VERSION, VIEW.plural, optional=True)
async def forget(namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    """Stop materializing a deleted View and delete this replica's copy."""
    assert namespace is not None
    await _views(memo.executor.runtime).forget(namespace, name)


async def _show(runtime: Runtime, body: kopf.Body) -> None:
    meta = body["metadata"]
    if (body.get("status") or {}).get("phase") == "Invalid" and (
        (body.get("status") or {}).get("observedGeneration") == meta.get("generation")
    ):
        return
    state = await _views(runtime).state(meta["namespace"], meta["name"])
    if state is None:
        return
    patch = _status(state)
    old = body.get("status") or {}
    if all(old.get(k) == v for k, v in patch.items()) and old.get("observedGeneration") == meta.get(
        "generation"
    ):
        return
    await _patch(runtime, body, patch, state.phase, state.message, state.failed, state.problem)


def _status(state: ViewState) -> dict[str, Any]:
    return {
        "phase": state.phase,
        "message": state.message or None,
        "offset": state.offset,
        "lag": state.lag,
        "rows": state.rows,
        "failed": state.failed,
    }


async def _patch(
    runtime: Runtime,
    body: kopf.Body,
    patch: dict[str, Any],
    phase: str,
    message: str,
    failed: int = 0,
    problem: str = "",
) -> None:
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = (body.get("status") or {}).get("conditions")
    now = now_rfc3339()
    ready = phase == "Ready" or (phase == "Building" and "previous spec" in message)
    conditions = [
        updated_condition(
            "Ready", "True" if ready else "False", phase, message, generation, previous, now
        ),
        updated_condition(
            "Building",
            "True" if phase == "Building" else "False",
            phase,
            message if phase == "Building" else "",
            generation,
            previous,
            now,
        ),
        updated_condition(
            "Invalid",
            "True" if phase == "Invalid" else "False",
            phase,
            message if phase == "Invalid" else "",
            generation,
            previous,
            now,
        ),
        updated_condition(
            "Degraded",
            "True" if failed else "False",
            "ExpressionFailed" if failed else "Healthy",
            f"{failed} source(s) have no row because an expression failed on them; the first: "
            f"{problem} (fix the View's expressions, or the source)"
            if failed
            else "",
            generation,
            previous,
            now,
        ),
    ]
    await runtime.patch_status(
        VIEW,
        meta["namespace"],
        meta["name"],
        {
            **patch,
            "observedGeneration": generation,
            "conditions": [c.to_status() for c in conditions],
        },
    )
