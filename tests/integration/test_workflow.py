"""A Workflow runs on the real control plane, journaled in etcd, observable with kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kurable.engine.records import RunFailing, StepCompleted, WorkflowFinished
from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import Door, apply, eventually, get, journal, wait_phase, workflow

HELLO = ROOT / "examples" / "hello" / "workflow.yaml"


def test_hello_example_succeeds_and_kubectl_wait_returns(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, HELLO)
    waited = control_plane.kubectl(
        "wait", "-n", namespace, "--for=condition=Succeeded", "workflow/hello", "--timeout=60s"
    )
    assert "condition met" in waited.stdout

    wf = get(control_plane, namespace, "workflow/hello")
    status = wf["status"]
    assert status["phase"] == "Succeeded"
    assert status["output"] == {"summary": "Hello, Kurable! (big)", "count": 3}
    assert [s["name"] for s in status["steps"]] == ["greet", "nap", "summarize"]
    assert all(s["phase"] == "Succeeded" and s["attempts"] == 1 for s in status["steps"])
    assert status["observedGeneration"] == wf["metadata"]["generation"]
    assert status["stepsCompleted"] == 3

    records = journal(control_plane, wf["metadata"]["uid"])
    assert [r.type for r in records] == [
        "WorkflowStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "StepCompleted",
        "WorkflowFinished",
    ]
    assert status["journal"]["records"] == len(records)


def test_printer_columns_show_phase_reason_template_step_times_and_age(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, HELLO)
    wait_phase(control_plane, namespace, "hello", ("Succeeded",))
    table = control_plane.kubectl("get", "-n", namespace, "workflows.kurable.dev").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "NAME", "PHASE", "REASON", "TEMPLATE", "STEP", "ATTEMPTS", "DONE", "AGE"
    ]  # fmt: skip
    assert row.split()[:3] == ["hello", "Succeeded", "Succeeded"]
    wide = control_plane.kubectl("get", "-n", namespace, "kwf", "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header[header.index("DONE") + 1 :] == [
        "STARTED", "FINISHED", "MESSAGE", "EXECUTOR", "AGE"
    ]  # fmt: skip
    # `wf` is Argo Workflows' short name: Kurable's is `kwf` only.
    names = control_plane.kubectl(
        "get", "crd", "workflows.kurable.dev", "-o", "jsonpath={.spec.names.shortNames}"
    ).stdout
    assert json.loads(names) == ["kwf"]


def test_sleep_shows_waiting_step_and_wake_time(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, HELLO)
    # The step becomes current before its timer is journaled: wait for the timer.
    wf = eventually(
        lambda: get(control_plane, namespace, "workflow/hello"),
        lambda w: any(
            s["name"] == "nap" and s["phase"] == "Waiting"
            for s in (w.get("status") or {}).get("steps") or []
        ),
        30,
        "the nap step to wait",
    )
    nap = next(s for s in wf["status"]["steps"] if s["name"] == "nap")
    assert nap["wakeAt"]
    assert wf["status"]["currentStep"] == "nap"
    assert wf["status"]["phase"] == "Running"
    assert wf["status"]["message"].startswith("sleeping until")


def test_expression_syntax_error_marks_the_run_invalid_naming_step_and_field(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow("typo", **{"steps": [{"name": "calc", "set": {"total": "${ 1 + }"}}]}),
    )
    wf = wait_phase(control_plane, namespace, "typo", ("Invalid",))
    assert "spec.steps[0].set.total" in wf["status"]["message"]
    assert "syntax error" in wf["status"]["message"]
    succeeded = {c["type"]: c for c in wf["status"]["conditions"]}["Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Invalid")
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=Invalid"
    ).stdout
    assert "typo" in events


def test_a_failing_expression_fails_the_run_with_its_message(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "divide"},
            "spec": {
                "input": {"d": 0},
                "steps": [{"name": "div", "set": {"q": "${ 10 / input.d }"}}],
            },
        },
    )
    wf = wait_phase(control_plane, namespace, "divide", ("Failed",))
    assert wf["status"]["error"]["step"] == "div"
    assert "divide by zero" in wf["status"]["message"]


def test_suspend_pauses_before_the_next_step_and_resume_continues(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "paused"},
            "spec": {
                "suspend": True,
                "steps": [{"name": "a", "set": {"x": 1}}, {"name": "b", "set": {"y": 2}}],
            },
        },
    )
    wf = wait_phase(control_plane, namespace, "paused", ("Suspended",))
    assert wf["status"]["steps"] == []
    assert {c["type"]: c for c in wf["status"]["conditions"]}["Suspended"]["status"] == "True"
    control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "workflow/paused",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
    )
    wf = wait_phase(control_plane, namespace, "paused", ("Succeeded",))
    assert [s["name"] for s in wf["status"]["steps"]] == ["a", "b"]


def test_a_run_suspended_past_its_deadline_fails_with_timeout_and_compensates(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    """Field report (issue 10): `spec.timeout: 6s`, one 2 s sleep, `spec.suspend=true`
    patched during the sleep. The run stayed Suspended past its deadline until an
    unrelated change woke it; the deadline keeps running while suspended."""
    apply(
        control_plane,
        namespace,
        workflow(
            "late",
            timeout="6s",
            steps=[
                {"name": "nap", "sleep": {"duration": "2s"}, "compensate": {"set": {"undone": 1}}}
            ],
        ),
    )
    wf = eventually(
        lambda: get(control_plane, namespace, "workflow/late"),
        lambda w: (w.get("status") or {}).get("currentStep") == "nap",
        30,
        "the sleep to start",
    )
    control_plane.kubectl(
        "patch", "-n", namespace, "workflow/late", "--type=merge", "-p",
        '{"spec":{"suspend":true}}',
    )  # fmt: skip
    # Nothing else changes the object: only the deadline can end the run.
    wf = wait_phase(control_plane, namespace, "late", ("Failed", "Succeeded"), timeout=60)
    assert wf["status"]["phase"] == "Failed", wf["status"]
    records = journal(control_plane, wf["metadata"]["uid"])
    failing = next(r.data for r in records if isinstance(r.data, RunFailing))
    assert failing.error.reason == "Timeout"
    undone = [r.step for r in records if isinstance(r.data, StepCompleted) and r.data.of == "nap"]
    assert undone == ["nap:compensate"]
    finished = records[-1].data
    assert isinstance(finished, WorkflowFinished) and finished.reason == "Compensated"


def test_deleting_a_workflow_removes_its_journal(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, HELLO)
    wf = wait_phase(control_plane, namespace, "hello", ("Succeeded",))
    uid = wf["metadata"]["uid"]
    assert journal(control_plane, uid)
    control_plane.kubectl("delete", "-n", namespace, "workflow/hello", "--timeout=30s")
    # No finalizer holds the object: the journal goes once the watch sees it deleted.
    eventually(lambda: journal(control_plane, uid), lambda records: records == [], 30, "no journal")


def test_large_spec_keeps_kopf_bookkeeping_out_of_annotations(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    # 300 KiB of spec: more than all annotations together may hold (256 KiB).
    blob = "x" * (300 * 1024)
    manifest = {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "large"},
        "spec": {
            "input": {"blob": blob},
            "steps": [{"name": "count", "set": {"length": "${ size(input.blob) }"}}],
        },
    }
    import yaml

    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    wf = wait_phase(control_plane, namespace, "large", ("Succeeded",))
    assert wf["status"]["steps"][0]["output"] == {"length": len(blob)}
    annotations = wf["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "kopf" in k], annotations


def test_history_command_prints_the_journal(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    apply(control_plane, namespace, HELLO)
    wait_phase(control_plane, namespace, "hello", ("Succeeded",))
    result = subprocess.run(
        [sys.executable, "-m", "kurable", "history", "workflow/hello", "-n", namespace],
        env={**os.environ, **door.env()},  # through the endpoint
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert "RECORD" in lines[0]
    assert [line.split()[2] for line in lines[1:]] == [
        "WorkflowStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "StepCompleted",
        "WorkflowFinished",
    ]


def test_deleting_a_running_workflow_stops_it_and_removes_its_journal(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow("doomed", **{"steps": [{"name": "nap", "sleep": {"duration": "1h"}}]}),
    )
    wf = eventually(
        lambda: get(control_plane, namespace, "workflow/doomed"),
        lambda w: (w.get("status") or {}).get("currentStep") == "nap",
        30,
        "the run to sleep",
    )
    control_plane.kubectl("delete", "-n", namespace, "workflow/doomed", "--timeout=30s")
    # Workflows carry no finalizer: the run stops and its journal goes when the operator
    # sees the DELETED event, a moment after the API server has removed the object.
    eventually(
        lambda: journal(control_plane, wf["metadata"]["uid"]),
        lambda records: records == [],
        30,
        "the journal to be removed",
    )
    gone = control_plane.kubectl("get", "-n", namespace, "workflow/doomed", check=False)
    assert gone.returncode != 0


def test_an_executor_that_lost_its_hold_claims_the_run_again_and_finishes(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    """As when its lease expired during a pause: the next commit is refused, and the
    executor must take the run back rather than leave it stranded."""
    import asyncio

    from kurable.store import keys
    from kurable.store.journal import EtcdConfig, connect

    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "orphaned"},
            "spec": {
                "steps": [
                    {"name": "nap", "sleep": {"duration": "2s"}},
                    {"name": "after", "set": {"done": True}},
                ]
            },
        },
    )
    wf = eventually(
        lambda: get(control_plane, namespace, "workflow/orphaned"),
        lambda w: (w.get("status") or {}).get("currentStep") == "nap",
        30,
        "the run to sleep",
    )

    async def drop_owner() -> int:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint))
        try:
            owner = keys.owner("/kurable/", wf["metadata"]["uid"]).encode()
            result = await etcd.delete(owner)
            return 1 if result else 0
        finally:
            await etcd.close()

    assert asyncio.run(drop_owner()) == 1
    done = wait_phase(control_plane, namespace, "orphaned", ("Succeeded",), timeout=30)
    assert done["status"]["steps"][-1]["output"] == {"done": True}
