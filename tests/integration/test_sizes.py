"""Sizes: a value over the journal's limit fails its step once, cleanly; large values
within it are stored (in chunks) and read back whole; a child's output comes from its
journal, never from its status preview."""

from __future__ import annotations

from collections import Counter

from kurable.engine import sizes
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, get, journal, wait_phase, workflow
from .service import Service


def test_a_response_over_the_limit_fails_the_step_once_with_output_too_large(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    with Service(padding=2 * 1024 * 1024) as service:
        apply(
            control_plane,
            namespace,
            workflow(
                "big",
                steps=[
                    {
                        "name": "fetch",
                        "http": {"method": "GET", "url": service.url("/big")},
                        "retry": {"maxAttempts": 5, "backoff": {"initial": "100ms"}},
                    }
                ],
            ),
        )
        wf = wait_phase(control_plane, namespace, "big", ("Failed",))
        uid = wf["metadata"]["uid"]
        assert service.keys == Counter({f"{uid}/fetch": 1})
    status = wf["status"]
    assert status["reason"] == "StepFailed"
    assert "Stalled" not in [c["type"] for c in status["conditions"] if c["status"] == "True"]
    failed = [r for r in journal(control_plane, uid) if r.type == "StepFailed"]
    assert len(failed) == 1
    error = failed[0].data.error
    assert error.kind == "OutputTooLarge"
    assert error.message.startswith("the output of step fetch is 2.0 MiB")
    assert "limit of 1.0 MiB" in error.message and "--max-value-bytes" in error.message


def test_a_response_within_the_limit_is_journaled_whole_and_read_back(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    padding = 600 * 1024
    with Service(padding=padding) as service:
        apply(
            control_plane,
            namespace,
            workflow(
                "large",
                steps=[{"name": "fetch", "http": {"method": "GET", "url": service.url("/l")}}],
                output="${ size(steps.fetch.output.blob) }",
            ),
        )
        wf = wait_phase(control_plane, namespace, "large", ("Succeeded",))
    assert wf["status"]["output"] == padding
    records = journal(control_plane, wf["metadata"]["uid"])
    completed = next(r for r in records if r.type == "StepCompleted" and r.step == "fetch")
    assert completed.data.output["blob"] == "x" * padding
    assert sizes.encoded_size(completed.data.output) > sizes.CHUNK_BYTES  # stored in chunks


CHILD_OUTPUT = {"items": [{"id": i, "name": f"item-{i:04d}", "ok": True} for i in range(40)]}


def test_a_childs_output_larger_than_its_status_preview_reaches_the_parent_exactly(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    assert 1024 < sizes.encoded_size(CHILD_OUTPUT) < 4096  # over status' preview limit
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "listing"},
            "spec": {
                "steps": [{"name": "make", "set": {"r": "${ input.value }"}}],
                "output": "${ vars.r }",
            },
        },
    )
    apply(
        control_plane,
        namespace,
        workflow(
            "lister",
            steps=[
                {
                    "name": "child",
                    "workflow": {
                        "templateRef": {"name": "listing"},
                        "input": {"value": CHILD_OUTPUT},
                    },
                }
            ],
            output="${ size(steps.child.output.items) }",
        ),
    )
    wf = wait_phase(control_plane, namespace, "lister", ("Succeeded",))
    child = get(control_plane, namespace, "workflow/lister-child")
    assert child["status"]["output"]["truncated"] is True  # status shows a preview only
    assert wf["status"]["output"] == 40
    records = journal(control_plane, wf["metadata"]["uid"])
    completed = next(r for r in records if r.type == "StepCompleted" and r.step == "child")
    assert completed.data.output == CHILD_OUTPUT
