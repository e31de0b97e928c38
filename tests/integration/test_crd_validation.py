"""Bad manifests are refused by the API server at apply time, naming the field."""

from __future__ import annotations

from kurable.testing import ControlPlane

from .conftest import apply, refused

HEAD = """
apiVersion: kurable.dev/v1alpha1
kind: Workflow
metadata: {name: bad}
spec:
"""


def test_unknown_step_kind_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    message = refused(
        control_plane, namespace, HEAD + "  steps:\n  - {name: a, frobnicate: {x: 1}}\n"
    )
    assert "spec.steps[0]" in message
    assert "frobnicate" in message or "exactly one action" in message


def test_step_without_an_action_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    message = refused(control_plane, namespace, HEAD + "  steps:\n  - {name: a}\n")
    assert "spec.steps[0]" in message and "exactly one action" in message


def test_two_actions_in_one_step_are_refused(control_plane: ControlPlane, namespace: str) -> None:
    manifest = HEAD + "  steps:\n  - {name: a, set: {x: 1}, sleep: {duration: 1s}}\n"
    assert "exactly one action" in refused(control_plane, namespace, manifest)


def test_duplicate_step_names_are_refused(control_plane: ControlPlane, namespace: str) -> None:
    manifest = HEAD + "  steps:\n  - {name: a, set: {x: 1}}\n  - {name: a, set: {x: 2}}\n"
    message = refused(control_plane, namespace, manifest)
    assert "spec.steps[1]" in message and "Duplicate value" in message


def test_malformed_duration_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    manifest = HEAD + "  steps:\n  - {name: nap, sleep: {duration: 5 parsecs}}\n"
    message = refused(control_plane, namespace, manifest)
    assert "spec.steps[0].sleep.duration" in message
    assert "must be a duration" in message


def test_steps_or_template_ref_is_required(control_plane: ControlPlane, namespace: str) -> None:
    message = refused(control_plane, namespace, HEAD + "  input: {a: 1}\n")
    assert "exactly one of spec.steps or spec.templateRef" in message


def test_bad_step_name_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    message = refused(control_plane, namespace, HEAD + "  steps:\n  - {name: 'a b', set: {}}\n")
    assert "spec.steps[0].name" in message


def test_entity_type_is_immutable(control_plane: ControlPlane, namespace: str) -> None:
    entity = "apiVersion: kurable.dev/v1alpha1\nkind: Entity\nmetadata: {name: alice}\n"
    apply(control_plane, namespace, entity + "spec: {type: wallet}\n")
    message = refused(control_plane, namespace, entity + "spec: {type: purse}\n")
    assert "spec.type" in message and "immutable" in message


def test_kubectl_explain_shows_field_descriptions(control_plane: ControlPlane) -> None:
    from .conftest import eventually

    result = eventually(
        lambda: control_plane.kubectl("explain", "workflow.spec.steps.sleep", check=False),
        lambda r: r.returncode == 0,
        30,
        "the OpenAPI of the CRD to be published",
    )
    assert "durable timer" in result.stdout
