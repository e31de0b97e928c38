"""A child run is cancelled when its parent stops waiting for it (engine/children.py):
the parent timed out, its step timed out, it was cancelled."""

from __future__ import annotations

from typing import Any

from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, eventually, get, wait_phase, workflow

WAITS = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "waits"},
    "spec": {"steps": [{"name": "hold", "wait": {"signal": "NEVER"}}]},
}


def child_step(template: str = "waits", **extra: Any) -> dict[str, Any]:
    return {"name": "child", "workflow": {"templateRef": {"name": template}}, **extra}


def ended_cancelled(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """The child run, once it has ended cancelled by its parent."""
    child = wait_phase(cp, namespace, name, ("Succeeded", "Failed", "Cancelled", "Invalid"))
    assert child["spec"].get("cancel") is True
    assert child["status"]["phase"] == "Cancelled", child["status"]
    return child


def test_a_parent_that_times_out_cancels_its_waiting_child(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, WAITS)
    apply(control_plane, namespace, workflow("w", timeout="4s", steps=[child_step()]))
    parent = wait_phase(control_plane, namespace, "w", ("Failed",), timeout=60)
    assert parent["status"]["reason"] == "Timeout"
    ended_cancelled(control_plane, namespace, "w-child")


def test_a_step_that_times_out_cancels_its_child(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, WAITS)
    apply(control_plane, namespace, workflow("s", steps=[child_step(timeout="3s")]))
    parent = wait_phase(control_plane, namespace, "s", ("Failed",), timeout=60)
    assert "timed out" in parent["status"]["message"]
    ended_cancelled(control_plane, namespace, "s-child")


def test_a_child_waiting_for_a_missing_template_is_cancelled_with_its_parent(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, workflow("m", timeout="4s", steps=[child_step("nowhere")]))
    parent = wait_phase(control_plane, namespace, "m", ("Failed",), timeout=60)
    assert parent["status"]["reason"] == "Timeout"
    child = ended_cancelled(control_plane, namespace, "m-child")
    assert child["status"]["reason"] == "Cancelled"


def test_a_cancelled_parent_cancels_its_running_child(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, WAITS)
    apply(control_plane, namespace, workflow("c", steps=[child_step()]))
    eventually(
        lambda: get(control_plane, namespace, "workflow/c-child"),
        lambda w: (w.get("status") or {}).get("currentStep") == "hold",
        30,
        "the child to wait",
    )
    control_plane.kubectl(
        "patch", "-n", namespace, "workflow/c", "--type=merge", "-p", '{"spec":{"cancel":true}}'
    )
    wait_phase(control_plane, namespace, "c", ("Cancelled",))
    ended_cancelled(control_plane, namespace, "c-child")
