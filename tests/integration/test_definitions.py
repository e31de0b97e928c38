"""Definitions are validated whole and early: a nested mistake makes a run or a template
Invalid with the field's path, before any step runs, never a Stalled run."""

from __future__ import annotations

import time
from typing import Any

from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, eventually, get, journal, wait_phase, workflow

NESTED_TYPO: dict[str, Any] = {
    "steps": [
        {"name": "first", "set": {"x": 1}},
        {"name": "second", "set": {"y": 2}},
        {
            "name": "fan",
            "parallel": {
                "branches": [
                    {"name": "a", "steps": [{"name": "nap", "sleep": {"durationn": "1s"}}]},
                    {"name": "b", "steps": [{"name": "calc", "set": {"z": 3}}]},
                ]
            },
        },
    ]
}
NESTED_PATH = "spec.steps[2].parallel.branches[0].steps[0].sleep: unknown field durationn"


def _invalid_before_any_step(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    wf = wait_phase(cp, namespace, name, ("Invalid",), timeout=30)
    conditions = {c["type"]: c for c in wf["status"]["conditions"]}
    assert "Stalled" not in conditions or conditions["Stalled"]["status"] != "True"
    records = journal(cp, wf["metadata"]["uid"])
    assert [r.type for r in records] == ["WorkflowFinished"]
    assert records[0].data["phase"] == "Invalid"
    return wf


def test_a_typo_nested_in_a_parallel_branch_makes_the_run_invalid_naming_the_field(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    applied = time.monotonic()
    apply(control_plane, namespace, workflow("nested-typo", **NESTED_TYPO))
    wf = _invalid_before_any_step(control_plane, namespace, "nested-typo")
    print(f"nested-typo Invalid {time.monotonic() - applied:.2f}s after apply")
    succeeded = {c["type"]: c for c in wf["status"]["conditions"]}["Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Invalid")
    assert NESTED_PATH in succeeded["message"]


def test_the_same_nested_typo_marks_a_template_invalid(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "nested-typo"},
            "spec": NESTED_TYPO,
        },
    )
    template = eventually(
        lambda: get(control_plane, namespace, "wft/nested-typo"),
        lambda t: (t.get("status") or {}).get("phase") == "Invalid",
        30,
        "the template to be marked Invalid",
    )
    assert template["status"]["message"] == NESTED_PATH
    ready = {c["type"]: c for c in template["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and NESTED_PATH in ready["message"]


def test_a_template_lists_every_problem(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    spec = {
        "steps": [
            {"name": "a", "set": {"x": "${ 1 + }"}, "next": "nowhere"},
            {"name": "b", "emit": {"topic": "t"}},
        ]
    }
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "many"},
            "spec": spec,
        },
    )
    template = eventually(
        lambda: get(control_plane, namespace, "wft/many"),
        lambda t: (t.get("status") or {}).get("phase") == "Invalid",
        30,
        "the template to be marked Invalid",
    )
    message = template["status"]["message"]
    assert "spec.steps[0].next: no step named 'nowhere'" in message
    assert "spec.steps[0].set.x: expression" in message
    assert "spec.steps[1].emit: step kind 'emit' is not performed" in message


def test_an_inline_run_whose_next_names_a_missing_step_is_invalid_before_its_first_step(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow(
            "bad-jump",
            steps=[
                {"name": "first", "set": {"x": 1}},
                {"name": "second", "set": {"y": 2}, "next": "nowhere"},
            ],
        ),
    )
    wf = _invalid_before_any_step(control_plane, namespace, "bad-jump")
    assert "spec.steps[1].next: no step named 'nowhere'" in wf["status"]["message"]
