"""The workflow engine on the real control plane: templates, signals, HTTP, retries,
failover, sagas, cancel, timeouts, child workflows, ttl. Every example runs here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import apply, eventually, get, journal, wait_phase, workflow
from .service import Service

EXAMPLES = ROOT / "examples"


@pytest.fixture
def service() -> Iterator[Service]:
    with Service(failures=2) as s:
        yield s


def test_approval_example_waits_for_the_signal_from_kubectl_annotate(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "approval" / "approval.yaml")
    eventually(
        lambda: get(control_plane, namespace, "wft/approval"),
        lambda t: (t.get("status") or {}).get("phase") == "Valid",
        30,
        "the template to be validated",
    )
    wf = eventually(
        lambda: get(control_plane, namespace, "workflow/expense-42"),
        lambda w: (w.get("status") or {}).get("currentStep") == "approve",
        30,
        "the run to wait for approval",
    )
    assert wf["status"]["template"]["name"] == "approval"
    assert wf["status"]["template"]["generation"] == 1
    control_plane.kubectl(
        "annotate",
        "-n",
        namespace,
        "workflow/expense-42",
        'kurable.dev/signal.APPROVE={"ok": true, "by": "bob"}',
    )
    wf = wait_phase(control_plane, namespace, "expense-42", ("Succeeded",))
    assert wf["status"]["output"] == {
        "summary": "alice asks for 250",
        "approved": True,
        "by": "bob",
    }
    records = journal(control_plane, wf["metadata"]["uid"])
    assert [r.data.name for r in records if r.type == "SignalReceived"] == ["APPROVE"]


def test_a_signal_sent_before_the_wait_starts_is_delivered_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    manifest = workflow(
        "early",
        steps=[
            {"name": "nap", "sleep": {"duration": "2s"}},
            {"name": "first", "wait": {"signal": "GO"}},
            {
                "name": "second",
                "wait": {"signal": "GO", "timeout": "3s"},
                "onFailure": {"goto": "end"},
            },
            {"name": "end", "set": {"done": True}},
        ],
    )
    manifest["metadata"]["annotations"] = {"kurable.dev/signal.GO": '{"n": 1}'}
    apply(control_plane, namespace, manifest)
    wf = wait_phase(control_plane, namespace, "early", ("Succeeded",))
    steps = {s["name"]: s for s in wf["status"]["steps"]}
    assert steps["first"]["output"] == {"n": 1}
    assert steps["second"]["phase"] == "Failed"  # the one signal was taken once
    assert "no signal 'GO'" in steps["second"]["message"]


def test_template_input_is_validated_against_input_schema(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "approval" / "approval.yaml")
    bad = workflow(
        "bad-input", templateRef={"name": "approval"}, input={"amount": 0, "requester": "x"}
    )
    apply(control_plane, namespace, bad)
    wf = wait_phase(control_plane, namespace, "bad-input", ("Invalid",))
    assert "spec.input.amount" in wf["status"]["message"]
    assert "spec.input.amount: must be >= 1, got 0" in wf["status"]["message"]


def test_a_run_is_pinned_to_the_template_it_started_with(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    template = {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "pinned"},
        "spec": {
            "steps": [
                {"name": "hold", "wait": {"signal": "GO"}},
                {"name": "mark", "set": {"version": "one"}},
            ],
            "output": "${ vars.version }",
        },
    }
    apply(control_plane, namespace, template)
    apply(control_plane, namespace, workflow("run-1", templateRef={"name": "pinned"}))
    eventually(
        lambda: get(control_plane, namespace, "workflow/run-1"),
        lambda w: (w.get("status") or {}).get("currentStep") == "hold",
        30,
        "run-1 to hold",
    )
    template["spec"]["steps"][1]["set"]["version"] = "two"
    apply(control_plane, namespace, template)
    control_plane.kubectl("delete", "-n", namespace, "wft/pinned")  # even deleting it
    control_plane.kubectl("annotate", "-n", namespace, "workflow/run-1", "kurable.dev/signal.GO={}")
    wf = wait_phase(control_plane, namespace, "run-1", ("Succeeded",))
    assert wf["status"]["output"] == "one"
    assert wf["status"]["template"]["generation"] == 1


def test_a_run_waits_for_a_template_applied_after_it(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, workflow("early-bird", templateRef={"name": "later"}))
    wf = wait_phase(control_plane, namespace, "early-bird", ("Pending",))
    stalled = {c["type"]: c for c in wf["status"]["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and "not found" in stalled["message"]
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "later"},
            "spec": {"steps": [{"name": "a", "set": {"x": 1}}]},
        },
    )
    wait_phase(control_plane, namespace, "early-bird", ("Succeeded",))


def test_http_step_retries_5xx_with_one_idempotency_key(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, service: Service
) -> None:
    apply(
        control_plane,
        namespace,
        workflow(
            "call",
            steps=[
                {
                    "name": "charge",
                    "http": {"url": service.url("/charge"), "body": {"amount": "${ 6 * 7 }"}},
                    "retry": {"maxAttempts": 4, "backoff": {"initial": "100ms", "jitter": 0}},
                }
            ],
            output="${ steps.charge.output }",
        ),
    )
    wf = wait_phase(control_plane, namespace, "call", ("Succeeded",))
    uid = wf["metadata"]["uid"]
    assert service.keys == Counter({f"{uid}/charge": 3})
    assert service.bodies[0] == {"amount": 42}
    assert wf["status"]["output"]["calls"] == 3
    assert wf["status"]["steps"][0]["attempts"] == 3


def test_http_4xx_is_not_retried_and_fails_the_run(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    with Service(failures=10, status=404) as service:
        apply(
            control_plane,
            namespace,
            workflow(
                "missing",
                steps=[
                    {
                        "name": "get",
                        "http": {"method": "GET", "url": service.url("/x")},
                        "retry": {"maxAttempts": 5},
                    }
                ],
            ),
        )
        wf = wait_phase(control_plane, namespace, "missing", ("Failed",))
    assert sum(service.keys.values()) == 1
    assert wf["status"]["reason"] == "StepFailed"
    assert "404" in wf["status"]["message"]


def test_http_header_from_a_secret(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    control_plane.kubectl(
        "create", "secret", "generic", "api", "-n", namespace, "--from-literal=token=Bearer s3cret"
    )
    with Service() as service:
        apply(
            control_plane,
            namespace,
            workflow(
                "auth",
                steps=[
                    {
                        "name": "call",
                        "http": {
                            "url": service.url("/"),
                            "headers": [
                                {
                                    "name": "Authorization",
                                    "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}},
                                }
                            ],
                        },
                    }
                ],
                output="${ steps.call.output.auth }",
            ),
        )
        wf = wait_phase(control_plane, namespace, "auth", ("Succeeded",))
    assert wf["status"]["output"] == "Bearer s3cret"


def test_failover_example_retries_then_continues_at_the_fallback(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "failover" / "workflow.yaml")
    wf = wait_phase(control_plane, namespace, "failover", ("Succeeded",))
    assert wf["status"]["output"] == {"quote": 42, "source": "fallback"}
    primary = next(s for s in wf["status"]["steps"] if s["name"] == "primary")
    assert primary["phase"] == "Failed" and primary["attempts"] == 3
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=Retrying"
    ).stdout
    assert "failover" in events


def test_saga_example_compensates_in_reverse_order(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "saga" / "workflow.yaml")
    wf = wait_phase(control_plane, namespace, "order-saga", ("Failed",))
    assert wf["status"]["reason"] == "Compensated"
    assert wf["status"]["error"]["step"] == "ship"
    records = journal(control_plane, wf["metadata"]["uid"])
    undone = [r.step for r in records if r.type == "StepCompleted" and r.data.of]
    assert undone == ["charge-card:compensate", "reserve-stock:compensate"]
    steps = {s["name"]: s for s in wf["status"]["steps"]}
    assert steps["charge-card:compensate"]["output"] == {"refunded": 120}
    assert steps["reserve-stock:compensate"]["output"] == {"released": 3}
    succeeded = {c["type"]: c for c in wf["status"]["conditions"]}["Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Compensated")


def test_cancel_compensates_and_ends_cancelled(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow(
            "cancel-me",
            steps=[
                {"name": "hold", "set": {"h": 1}, "compensate": {"set": {"released": True}}},
                {"name": "nap", "sleep": {"duration": "1h"}},
            ],
        ),
    )
    eventually(
        lambda: get(control_plane, namespace, "workflow/cancel-me"),
        lambda w: (w.get("status") or {}).get("currentStep") == "nap",
        30,
        "nap",
    )
    control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "workflow/cancel-me",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true}}',
    )
    wf = wait_phase(control_plane, namespace, "cancel-me", ("Cancelled",))
    assert wf["status"]["reason"] == "Compensated"


def test_workflow_timeout_fails_the_run(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow(
            "too-slow",
            timeout="2s",
            steps=[{"name": "nap", "sleep": {"duration": "1h"}}],
        ),
    )
    wf = wait_phase(control_plane, namespace, "too-slow", ("Failed",), timeout=30)
    assert wf["status"]["reason"] == "Timeout"
    assert "timed out" in wf["status"]["message"]


@pytest.mark.parametrize(
    "where", ["sleep", "timeout", "backoff"], ids=["sleep", "run-timeout", "retry-backoff"]
)
def test_a_duration_longer_than_a_timedelta_is_read_as_the_horizon_not_stalled(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, where: str
) -> None:
    """Field report: `1000000000d` passed the CRD, then every decision raised
    OverflowError and the run sat in Stalled/Retrying past its own timeout."""
    huge = "1000000000d"
    nap = {"name": "nap", "sleep": {"duration": huge if where == "sleep" else "1h"}}
    spec: dict[str, object] = {"timeout": huge if where == "timeout" else "3s", "steps": [nap]}
    if where == "backoff":
        # Nothing listens on port 1: the call fails at once and waits for its retry.
        spec["steps"] = [{"name": "call", "http": {"url": "http://127.0.0.1:1/"}}]
        spec["retry"] = {"maxAttempts": 3, "backoff": {"initial": huge, "max": huge}}
    name = f"huge-{where}"
    apply(control_plane, namespace, workflow(name, **spec))
    if where == "timeout":
        # A run timeout of a thousand years or more is no timeout this test can see end:
        # the run must simply be Running its sleep, not Stalled.
        wf = eventually(
            lambda: get(control_plane, namespace, f"workflow/{name}"),
            lambda w: (w.get("status") or {}).get("currentStep") == "nap",
            30,
            "the run to be sleeping",
        )
        assert wf["status"]["phase"] == "Running"
    else:
        wf = wait_phase(control_plane, namespace, name, ("Failed",), timeout=30)
        assert wf["status"]["reason"] == "Timeout", wf["status"]
    conditions = {c["type"]: c for c in wf["status"].get("conditions") or []}
    assert conditions.get("Stalled", {}).get("status") != "True", conditions


def test_child_workflow_runs_a_template_and_returns_its_output(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "double"},
            "spec": {
                "steps": [{"name": "calc", "set": {"r": "${ input.n * 2 }"}}],
                "output": "${ vars.r }",
            },
        },
    )
    apply(
        control_plane,
        namespace,
        workflow(
            "parent",
            steps=[
                {
                    "name": "child",
                    "workflow": {"templateRef": {"name": "double"}, "input": {"n": "${ 20 + 1 }"}},
                }
            ],
            output="${ steps.child.output }",
        ),
    )
    wf = wait_phase(control_plane, namespace, "parent", ("Succeeded",))
    assert wf["status"]["output"] == 42
    child = get(control_plane, namespace, "workflow/parent-child")
    assert child["metadata"]["ownerReferences"][0]["uid"] == wf["metadata"]["uid"]


def test_invalid_template_is_marked_with_what_to_fix(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "broken"},
            "spec": {"steps": [{"name": "a", "set": {"x": 1}, "next": "nowhere"}]},
        },
    )
    template = eventually(
        lambda: get(control_plane, namespace, "wft/broken"),
        lambda t: (t.get("status") or {}).get("phase") == "Invalid",
        30,
        "the template to be marked Invalid",
    )
    assert template["status"]["message"] == (
        "spec.steps[0].next: no step named 'nowhere' in the run's steps "
        "(a jump stays within its list of steps)"
    )


def test_fanout_example_runs_for_each_and_parallel_branches(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "fanout" / "workflow.yaml")
    wf = wait_phase(control_plane, namespace, "fanout", ("Succeeded",))
    assert wf["status"]["output"] == {
        "thumbs": ["thumbs/0-cat.png", "thumbs/1-dog.png", "thumbs/2-owl.png", "thumbs/3-fox.png"],
        "indexed": 4,
        "note": "4 thumbnails ready",
    }
    records = journal(control_plane, wf["metadata"]["uid"])
    items = [
        r.step
        for r in records
        if r.type == "StepCompleted" and (r.step or "").startswith("thumbnail[")
    ]
    assert sorted(items) == [f"thumbnail[{i}]" for i in range(4)]


def test_parallel_http_branches_call_at_the_same_time(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    with Service(gather=3) as service:
        branches = [
            {"name": f"b{i}", "steps": [{"name": "call", "http": {"url": service.url(f"/{i}")}}]}
            for i in range(3)
        ]
        apply(
            control_plane,
            namespace,
            workflow(
                "fan-http",
                steps=[{"name": "fan", "parallel": {"branches": branches}}],
            ),
        )
        wf = wait_phase(control_plane, namespace, "fan-http", ("Succeeded",))
    uid = wf["metadata"]["uid"]
    assert set(service.keys) == {f"{uid}/fan.b{i}.call" for i in range(3)}
    # each call was held until all three were in flight: a sequential executor would
    # show a peak of 1 (the hold times out) instead
    assert service.peak == 3
    records = journal(control_plane, uid)
    started = [
        r.seq for r in records if r.type == "StepStarted" and (r.step or "").endswith(".call")
    ]
    completed = [
        r.seq for r in records if r.type == "StepCompleted" and (r.step or "").endswith(".call")
    ]
    assert max(started) < min(completed)  # all three started before any finished


def test_child_example_returns_the_childs_output(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "child" / "child.yaml")
    wf = wait_phase(control_plane, namespace, "parent", ("Succeeded",))
    assert wf["status"]["output"] == {"square": 144}
    child = get(control_plane, namespace, "workflow/parent-child")
    assert child["status"]["template"]["name"] == "square"


def test_secret_header_example_fails_over_reading_the_error_kind(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "secret-header" / "workflow.yaml")
    wf = wait_phase(control_plane, namespace, "call-with-token", ("Succeeded",))
    assert wf["status"]["output"] == {"failure": "ConnectionError"}


def test_ttl_example_deletes_the_finished_run(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, EXAMPLES / "ttl" / "workflow.yaml")
    eventually(
        lambda: (
            control_plane.kubectl(
                "get", "-n", namespace, "workflow/short-lived", check=False
            ).returncode
        ),
        lambda code: code != 0,
        30,
        "the run to delete itself",
    )
