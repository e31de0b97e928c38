"""What people see through kubectl: kopf's bookkeeping stays small, Events name Kurable's
operator, a suspend shows at once."""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path
from typing import Any

from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import apply, eventually, get, wait_phase, workflow

KINDS = ("workflowtemplates", "workflows", "entitytypes", "entities", "schedules")
BIG = 500_000


def big_template(name: str) -> dict[str, Any]:
    """A WorkflowTemplate of more than 500 kB: a skipped step carries a large literal."""
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name},
        "spec": {
            "steps": [
                {"name": "hello", "set": {"greeting": "hi"}},
                {"name": "bulk", "when": "${ false }", "set": {"blob": "x" * BIG}},
            ]
        },
    }


def objects(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listed = cp.kubectl("get", "-n", namespace, ",".join(KINDS), "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(listed)["items"]
    return items


def test_kopf_bookkeeping_stays_under_1_kb_whatever_the_spec_size(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    # `create`, not `apply`: apply's last-applied annotation cannot hold 500 kB.
    text = json.dumps(big_template("big"))
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=text)
    control_plane.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/transfer"))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/schedule"))
    apply(control_plane, namespace, workflow("run-big", templateRef={"name": "big"}))
    wait_phase(control_plane, namespace, "run-big", ("Succeeded",))

    def handled(items: list[dict[str, Any]]) -> bool:
        # A Schedule has no phase: its next tick says it was handled.
        seen = ("phase", "nextScheduleTime")
        kinds = {o["kind"] for o in items if any((o.get("status") or {}).get(k) for k in seen)}
        return kinds >= {"WorkflowTemplate", "Workflow", "EntityType", "Entity", "Schedule"}

    items = eventually(lambda: objects(control_plane, namespace), handled, 60, "every kind")
    template = next(o for o in items if o["metadata"]["name"] == "big")
    assert len(json.dumps(template["spec"])) > BIG
    assert "diff" in template["status"]["kopf"]  # kopf keeps a diff base: its digests
    for obj in items:
        kopf = (obj.get("status") or {}).get("kopf") or {}
        annotations = obj["metadata"].get("annotations") or {}
        ours = {k: v for k, v in annotations.items() if "kopf" in k}
        size = len(json.dumps(kopf)) + len(json.dumps(ours))
        assert size <= 1024, f"{obj['kind']}/{obj['metadata']['name']}: {size} bytes"


def test_events_report_kurable_operator_and_its_instance(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, workflow("quick", steps=[{"name": "a", "set": {"x": 1}}]))
    wait_phase(control_plane, namespace, "quick", ("Succeeded",))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/transfer"))

    def events() -> list[dict[str, Any]]:
        listed = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(listed)["items"]
        return items

    # One Event from the executor (the run's end), one from a kopf handler (EntityType).
    seen = eventually(
        events,
        lambda items: {e["involvedObject"]["kind"] for e in items} >= {"Workflow", "EntityType"},
        30,
        "Events about the Workflow and the EntityType",
    )
    for event in seen:
        assert event["reportingComponent"] == "kurable-operator", event
        assert event["source"]["component"] == "kurable-operator", event
        # The operator's pod name; out of a cluster, where no KURABLE_EXECUTOR_ID names
        # it, the host's name (a pod's host name is its name).
        assert event["reportingInstance"] == socket.gethostname(), event


def test_a_suspend_during_a_sleep_shows_in_phase_and_an_event_at_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    steps = [{"name": "nap", "sleep": {"duration": "10m"}}, {"name": "after", "set": {"x": 1}}]
    apply(control_plane, namespace, workflow("napping", steps=steps))
    eventually(
        lambda: get(control_plane, namespace, "workflow/napping"),
        lambda w: (w.get("status") or {}).get("message", "").startswith("sleeping until"),
        30,
        "the nap to start",
    )
    control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "workflow/napping",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )
    run = wait_phase(control_plane, namespace, "napping", ("Suspended",), timeout=10)
    assert run["status"]["message"].startswith("Suspended (sleeping until")
    eventually(
        lambda: (
            control_plane.kubectl(
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                "involvedObject.name=napping,reason=Suspended",
                "-o",
                "name",
            ).stdout
        ),
        bool,
        10,
        "a Suspended Event",
    )


def test_json_logs_are_one_object_per_line_naming_the_workflow(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = f"jsonlog-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", namespace)
    log = tmp_path / "operator.log"
    process = OperatorProcess(
        control_plane.env(),
        log,
        namespaces=["jsonlog-*"],
        etcd_prefix="/jsonlog/",
        extra_args=["--log-format", "json"],
    )
    process.start()
    try:
        apply(control_plane, namespace, workflow("logged", steps=[{"name": "a", "set": {"x": 1}}]))
        wait_phase(control_plane, namespace, "logged", ("Succeeded",))
        apply(control_plane, namespace, workflow("gone", steps=[{"name": "a", "set": {"x": 1}}]))
        wait_phase(control_plane, namespace, "gone", ("Succeeded",))
        control_plane.kubectl("delete", "-n", namespace, "workflow/gone")
        eventually(
            lambda: log.read_text(), lambda text: "removed the journal" in text, 30, "the deletion"
        )
    finally:
        process.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    about = [line for line in lines if "removed the journal" in line["message"]]
    assert about and all(line["object"]["name"] == "gone" for line in about), about
    assert all(line["object"]["namespace"] == namespace for line in about)
    assert {"severity", "message", "timestamp"} <= set(lines[0])


def test_a_failed_run_with_nothing_to_undo_announces_no_compensation(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    steps = [{"name": "a", "set": {"x": 1}}, {"name": "boom", "set": {"y": "${ input.nope }"}}]
    apply(control_plane, namespace, workflow("plain-failure", steps=steps))
    run = wait_phase(control_plane, namespace, "plain-failure", ("Failed",))
    assert "compensat" not in run["status"]["message"]

    def events() -> list[dict[str, Any]]:
        listed = control_plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector",
            "involvedObject.name=plain-failure", "-o", "json",
        ).stdout  # fmt: skip
        items: list[dict[str, Any]] = json.loads(listed)["items"]
        return items

    seen = eventually(events, lambda items: any(e["reason"] == "Failed" for e in items), 30)
    assert not [e for e in seen if e["reason"] == "Failing" or "compensat" in e["message"]]
