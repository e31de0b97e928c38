"""Names and labels Kurable derives fit Kubernetes' limits (issue 10, §5)."""

from __future__ import annotations

from kurable.engine.names import is_label_value, is_name
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, get, wait_phase, workflow

TEMPLATE = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "double"},
    "spec": {
        "steps": [{"name": "calc", "set": {"r": "${ input.n * 2 }"}}],
        "output": "${ vars.r }",
    },
}


def test_a_parent_named_with_70_characters_runs_its_children(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    parent = "p" * 70
    apply(control_plane, namespace, TEMPLATE)
    apply(
        control_plane,
        namespace,
        workflow(
            parent,
            steps=[
                {
                    "name": "child",
                    "workflow": {"templateRef": {"name": "double"}, "input": {"n": 21}},
                },
                {
                    "name": "each",
                    "forEach": {"items": "${ [1, 2] }"},
                    "workflow": {"templateRef": {"name": "double"}, "input": {"n": "${ item }"}},
                },
            ],
            output={"child": "${ steps.child.output }"},
        ),
    )
    wf = wait_phase(control_plane, namespace, parent, ("Succeeded", "Failed"), timeout=60)
    assert wf["status"]["phase"] == "Succeeded", wf["status"].get("message")
    assert wf["status"]["output"] == {"child": 42}
    uid = wf["metadata"]["uid"]
    children = [
        c
        for c in get(control_plane, namespace, "workflows")["items"]
        if (c["metadata"].get("labels") or {}).get("kurable.dev/parent-uid") == uid
    ]
    assert len(children) == 3
    for child in children:
        assert is_name(child["metadata"]["name"])
        label = child["metadata"]["labels"]["kurable.dev/parent"]
        assert is_label_value(label) and label.startswith("p" * 40)
        assert child["status"]["phase"] == "Succeeded"
