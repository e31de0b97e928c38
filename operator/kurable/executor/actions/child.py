"""The `workflow` step: start a child Workflow from a template and wait for its end.

The child's status only says *when* it ended (its change wakes the parent); *what* it
ended with (phase, output, error) is read from its journal's WorkflowFinished record in
etcd, never from status, which shows large outputs as a truncated preview."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import API_VERSION, GROUP, VERSION, WORKFLOW
from kurable.engine import expressions, records
from kurable.engine.children import children_to_cancel
from kurable.engine.decide import Act, StepError
from kurable.engine.journal import TERMINAL_PHASES
from kurable.engine.names import child_run_name, label_value

from ..errors import api_error_message
from ..runtime import Runtime
from .outcome import Outcome, RunRef

CHILD_POLL_SECONDS = 30.0
"""A child's status changes wake the parent at once; this is only the fallback poll."""


PARENT_LABEL = "kurable.dev/parent"
"""The parent run's name (as a label value: shortened with a hash when it is longer than 63)."""
PARENT_UID_LABEL = "kurable.dev/parent-uid"
"""The parent run's uid: selects a run's children whatever the length of its name."""


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    spec = act.step.workflow
    assert spec is not None
    api = k8s.CustomObjectsApi(runtime.api)
    name = child_run_name(run.name, act.step.name, act.visit)
    body = {
        "apiVersion": API_VERSION,
        "kind": WORKFLOW.kind,
        "metadata": {
            "name": name,
            "labels": {PARENT_LABEL: label_value(run.name), PARENT_UID_LABEL: run.uid},
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
        if e.status in (400, 422):  # the API server refuses the child: retrying cannot help
            return None, StepError(
                "ChildRejected",
                f"cannot start child {name}: {api_error_message(e)}",
                retryable=False,
            )
        if e.status != 409:  # 409: created by an earlier execution of this attempt
            raise
    wakeup = runtime.wakeup(run.uid)  # the child's status changes wake its parent
    try:
        return await _await_child(runtime, api, run, name, wakeup)
    finally:
        runtime.unsubscribe(run.uid, wakeup)


async def _await_child(
    runtime: Runtime, api: k8s.CustomObjectsApi, run: RunRef, name: str, wakeup: asyncio.Event
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
        if (child.get("status") or {}).get("phase") in TERMINAL_PHASES:
            finished = await _finished(runtime, child["metadata"]["uid"])
            if finished is None:
                return None, StepError(
                    "ChildJournalMissing",
                    f"child workflow {name} shows a terminal phase, but its journal in etcd "
                    "has no end record (was it forgotten?); its output cannot be read",
                    retryable=False,
                )
            if finished.phase == "Succeeded":
                return finished.output, None
            message = finished.error.message if finished.error is not None else ""
            return None, StepError(
                "ChildFailed",
                f"child workflow {name} ended {finished.phase}: {message}",
                retryable=False,
            )
        wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), CHILD_POLL_SECONDS)


async def cancel_abandoned(runtime: Runtime, run: RunRef, awaited: frozenset[str]) -> list[str]:
    """Cancel the children of `run` that it does not await (engine.children), setting
    their `spec.cancel: true`; return the names cancelled. Idempotent: a child cancelled
    already, ended or gone is left alone. Raises the API server's errors (the caller
    decides whether the run may go on without)."""
    listed = await runtime.list_objects(
        WORKFLOW, run.namespace, label_selector=f"{PARENT_UID_LABEL}={run.uid}"
    )
    uids = {obj["metadata"]["name"]: obj["metadata"]["uid"] for obj in listed}
    cancelled = []
    for name in children_to_cancel(listed, run.uid, awaited):
        # Only the object listed: a run of that name created since is not touched.
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": uids[name]},
            {"op": "add", "path": "/spec/cancel", "value": True},
        ]
        try:
            await runtime.patch_json(WORKFLOW, run.namespace, name, patch)
        except k8s.ApiException as e:
            if e.status not in (404, 422):  # 404: gone; 422: another object now
                raise
            continue
        cancelled.append(name)
    return cancelled


async def _finished(runtime: Runtime, uid: str) -> records.WorkflowFinished | None:
    """The child's WorkflowFinished record from its journal, or None when it has none."""
    journal, _ = await runtime.journal.load(uid)
    if journal and isinstance(journal[-1].data, records.WorkflowFinished):
        return journal[-1].data
    return None
