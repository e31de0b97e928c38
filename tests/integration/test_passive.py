"""A run costs a task only while it acts, and few API writes (issue 16).

A run waiting for a signal or a timer is parked: the operator's probe counts it
`passive`, not `driven`, and its signal, its timer, and an operator restart bring it
back. A fast run writes its status once (its end) and one Event; kopf writes nothing
to Workflows (no finalizer, no diff base), and the finalizer of an older version is
removed so that deleting such a run still removes its journal."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from kubernetes import client

from kurable.api.v1alpha1 import GROUP, VERSION
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import (
    Isolated,
    apply,
    eventually,
    get,
    journal,
    journal_revisions,
    wait_phase,
    workflow,
)

OLD_FINALIZER = "kurable.dev/finalizer"


def report(operator: OperatorProcess) -> dict[str, Any]:
    """The liveness probe's report of the operator's runs (or {} while it starts)."""
    try:
        url = f"http://127.0.0.1:{operator.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as answer:
            probes: dict[str, Any] = json.loads(answer.read())
    except OSError:
        return {}
    return dict(probes.get("resync") or {})


def passive(operator: OperatorProcess, parked: int = 1) -> dict[str, Any]:
    """Wait until the operator parks `parked` runs and drives none. (Whether a timer
    already fired depends on the machine's speed: the timed run may be parked or done.)"""
    return eventually(
        lambda: report(operator),
        lambda r: r.get("passive", 0) >= parked and r.get("driven") == 0,
        90,
        f"{parked} parked runs and none driven",
    )


def waiting_runs() -> list[dict[str, Any]]:
    """One run waiting for a signal, one on a timer long enough to see both parked."""
    return [
        workflow(
            "signalled",
            steps=[
                {"name": "hold", "wait": {"signal": "GO"}},
                {"name": "after", "set": {"by": "${ steps.hold.output.by }"}},
            ],
        ),
        workflow(
            "timed",
            steps=[
                {"name": "nap", "sleep": {"duration": "15s"}},
                {"name": "after", "set": {"woke": True}},
            ],
        ),
    ]


def test_a_waiting_run_holds_no_task_and_wakes_on_its_signal_and_timer_also_after_a_restart(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    cp, namespace = control_plane, isolated.namespace
    first = isolated.operator("passive-test").start()
    try:
        for manifest in waiting_runs():
            apply(cp, namespace, manifest)
        passive(first)
        cp.kubectl(
            "annotate", "-n", namespace, "workflow/signalled", 'kurable.dev/signal.GO={"by":"a"}'
        )
        signalled = wait_phase(cp, namespace, "signalled", ("Succeeded", "Failed"))
        assert signalled["status"]["phase"] == "Succeeded"
        assert signalled["status"]["steps"][-1]["output"] == {"by": "a"}
        timed = wait_phase(cp, namespace, "timed", ("Succeeded", "Failed"))
        assert timed["status"]["phase"] == "Succeeded"
        done = eventually(
            lambda: report(first),
            lambda r: r.get("passive") == 0 and r.get("driven") == 0,
            30,
            "none parked, none driven",
        )
        # Each was parked and driven again: one by its signal, one by its timer.
        assert done["woken"] >= 2, done

        for manifest in waiting_runs():
            manifest["metadata"]["name"] += "-again"
            manifest["spec"]["steps"][0].get("sleep", {}).update(duration="30s")
            apply(cp, namespace, manifest)
        passive(first, parked=2)  # the 30 s timer cannot have fired yet
        versions = resource_versions(cp, namespace)
    finally:
        first.kill()

    second = isolated.operator("passive-test").start()
    try:
        passive(second, parked=2)  # kopf's listing brought them back, and they parked again
        # Taken back without a write: their status already said what it would say.
        assert resource_versions(cp, namespace) == versions
        cp.kubectl(
            "annotate",
            "-n",
            namespace,
            "workflow/signalled-again",
            'kurable.dev/signal.GO={"by":"b"}',
        )
        signalled = wait_phase(cp, namespace, "signalled-again", ("Succeeded", "Failed"))
        assert signalled["status"]["steps"][-1]["output"] == {"by": "b"}
        timed = wait_phase(cp, namespace, "timed-again", ("Succeeded", "Failed"))
        assert timed["status"]["phase"] == "Succeeded"
        records = journal(cp, timed["metadata"]["uid"], isolated.prefix)
        assert [(r.type, r.step) for r in records] == [
            ("WorkflowStarted", None),
            ("StepStarted", "nap"),
            ("StepCompleted", "nap"),
            ("StepCompleted", "after"),
            ("WorkflowFinished", None),
        ]
    finally:
        second.stop()


def test_a_fast_run_writes_its_status_once_and_one_event_and_kopf_writes_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    with cp.api_client() as api:
        custom = client.CustomObjectsApi(api)
        since = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "workflows")[
            "metadata"
        ]["resourceVersion"]
        apply(
            cp,
            namespace,
            workflow("quick", steps=[{"name": f"s{i}", "set": {f"v{i}": i}} for i in range(3)]),
        )
        done = wait_phase(cp, namespace, "quick", ("Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded"
        # Whatever would be written late (a coalesced patch, a kopf patch) lands by now.
        time.sleep(3)
        changes = [
            (event["type"], event["object"])
            for event in _replay(custom, namespace, since)
            if event["object"]["metadata"]["name"] == "quick"
        ]
        events = client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector="involvedObject.name=quick"
        )
    assert [kind for kind, _ in changes] == ["ADDED", "MODIFIED"], [
        (kind, obj["metadata"].get("finalizers"), obj.get("status")) for kind, obj in changes
    ]
    final = changes[-1][1]
    assert final["status"]["phase"] == "Succeeded"
    assert not final["metadata"].get("finalizers")
    assert "kopf" not in final["status"]
    assert [e.reason for e in events.items] == ["Succeeded"]
    # Its journal is one transaction: the start and every step follow at once.
    records = journal(cp, final["metadata"]["uid"])
    assert [r.type for r in records] == ["WorkflowStarted"] + ["StepCompleted"] * 3 + [
        "WorkflowFinished"
    ]
    assert final["status"]["journal"]["records"] == 5
    assert len(set(journal_revisions(cp, final["metadata"]["uid"]))) == 1


def test_a_run_with_the_old_finalizer_loses_it_and_its_deletion_removes_the_journal(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    manifest = workflow("legacy", steps=[{"name": "hold", "wait": {"signal": "GO"}}])
    manifest["metadata"]["finalizers"] = [OLD_FINALIZER]
    apply(cp, namespace, manifest)
    running = wait_phase(cp, namespace, "legacy", ("Running",))
    uid = running["metadata"]["uid"]
    eventually(
        lambda: get(cp, namespace, "workflow/legacy")["metadata"].get("finalizers"),
        lambda finalizers: not finalizers,
        30,
        "the old finalizer to go",
    )
    assert journal(cp, uid)
    cp.kubectl("delete", "-n", namespace, "workflow/legacy", "--timeout=30s")
    eventually(lambda: journal(cp, uid), lambda records: records == [], 30, "the journal to go")


def _replay(custom: client.CustomObjectsApi, namespace: str, since: str) -> list[dict[str, Any]]:
    """Every change to the namespace's Workflows since resourceVersion `since`."""
    from kubernetes import watch

    return list(
        watch.Watch().stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "workflows",
            resource_version=since,
            timeout_seconds=2,
        )
    )


def resource_versions(cp: ControlPlane, namespace: str) -> dict[str, str]:
    """The resourceVersion of each waiting run left (the first ones finished)."""
    listed = json.loads(cp.kubectl("get", "workflows", "-n", namespace, "-o", "json").stdout)
    return {
        item["metadata"]["name"]: item["metadata"]["resourceVersion"]
        for item in listed["items"]
        if item["metadata"]["name"].endswith("-again")
    }
