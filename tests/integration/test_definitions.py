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
    assert getattr(records[0].data, "phase", None) == "Invalid"
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
            {"name": "b", "job": {"template": {}}},
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
    assert "spec.steps[1].job: step kind 'job' is not performed" in message


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


# kubectl reads an unquoted `n:` as the key "false" (YAML 1.1); the CRD cannot see inside
# `set`, so the validator says it (issue 10, §9).
YAML11_SET: dict[str, Any] = {"steps": [{"name": "count", "set": {"false": 1}}]}
YAML11_PATH = "spec.steps[0].set.false"


def _says_yaml11(message: str) -> None:
    assert YAML11_PATH in message
    assert "YAML 1.1" in message and "quote the key" in message


def test_a_set_key_read_as_a_yaml11_boolean_makes_the_run_invalid_saying_to_quote_it(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, workflow("yaml11", **YAML11_SET))
    wf = _invalid_before_any_step(control_plane, namespace, "yaml11")
    _says_yaml11(wf["status"]["message"])
    succeeded = {c["type"]: c for c in wf["status"]["conditions"]}["Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Invalid")
    _says_yaml11(succeeded["message"])


def test_a_set_key_read_as_a_yaml11_boolean_marks_a_template_invalid(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "yaml11"},
            "spec": YAML11_SET,
        },
    )
    template = eventually(
        lambda: get(control_plane, namespace, "wft/yaml11"),
        lambda t: (t.get("status") or {}).get("phase") == "Invalid",
        30,
        "the template to be marked Invalid",
    )
    _says_yaml11(template["status"]["message"])
    ready = {c["type"]: c for c in template["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False"
    _says_yaml11(ready["message"])
