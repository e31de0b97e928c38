"""Bad manifests are refused by the API server at apply time, naming the field."""

from __future__ import annotations

import json
import subprocess

import pytest

from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, eventually, get, refused, wait_phase

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


# --- signal names (issue 10, §4): the annotation kurable.dev/signal.NAME must be able to
# carry the name: its name part `signal.NAME` is at most 63 characters, alphanumeric at
# both ends.

SIGNAL_WHY = "kurable.dev/signal.NAME"


@pytest.mark.parametrize(
    "steps",
    [
        "  - {name: w, wait: {signal: done_}}\n",
        "  - {name: w, wait: {signal: done-}}\n",
        f"  - {{name: w, wait: {{signal: {'a' * 57}}}}}\n",
        "  - {name: w, forEach: {items: '[1, 2]'}, wait: {signal: item_}}\n",
    ],
    ids=[
        "trailing-underscore",
        "trailing-dash",
        "57-chars",
        "forEach",
    ],
)
def test_signal_names_no_annotation_can_carry_are_refused(
    control_plane: ControlPlane, namespace: str, steps: str
) -> None:
    message = refused(control_plane, namespace, HEAD + "  steps:\n" + steps)
    assert "wait.signal" in message
    assert SIGNAL_WHY in message and "at most 56 characters" in message


def test_signal_names_an_annotation_can_carry_are_accepted(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    longest = "A" * 55 + "9"
    manifest = HEAD.replace("bad", "good") + (
        "  steps:\n"
        "  - {name: a, wait: {signal: APPROVE}}\n"
        f"  - {{name: b, wait: {{signal: {longest}}}}}\n"
        "  - {name: c, wait: {signal: _a-b_c1}}\n"
        "  - name: p\n    parallel:\n      branches:\n      - name: b\n"
        "        steps: [{name: w, wait: {signal: done}, compensate: {wait: {signal: undo}}}]\n"
    )
    apply(control_plane, namespace, manifest)
    key = f"kurable.dev/signal.{longest}"
    # The API server takes the key (kubectl fails otherwise) and the operator consumes it:
    # journals the signal, then removes the annotation and records what it consumed.
    control_plane.kubectl("annotate", "-n", namespace, "workflow/good", f"{key}={{}}")
    eventually(
        lambda: get(control_plane, namespace, "workflow/good")["metadata"]["annotations"],
        lambda notes: key not in notes and "kurable.dev/signals-consumed" in notes,
        30,
        f"the operator to consume {key}",
    )


# --- the definition of a Workflow is immutable (issue 10, §8)

RUN = """
apiVersion: kurable.dev/v1alpha1
kind: Workflow
metadata: {name: run}
spec:
  input: {amount: 10}
  steps:
  - {name: approve, wait: {signal: APPROVE}}
  - {name: done, set: {ok: true}}
"""


def _patch_result(
    cp: ControlPlane, namespace: str, patch: object, *extra: str
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "patch",
        "-n",
        namespace,
        "workflow/run",
        "--type=merge",
        "-p",
        json.dumps(patch),
        *extra,
        check=False,
    )


def _patch(cp: ControlPlane, namespace: str, patch: object, *extra: str) -> str:
    result = _patch_result(cp, namespace, patch, *extra)
    assert result.returncode != 0, f"the API server accepted the patch {patch}"
    return result.stderr


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"spec": {"steps": [{"name": "approve", "set": {"ok": False}}]}}, "spec.steps"),
        ({"spec": {"timeout": "1h"}}, "definition"),
    ],
    ids=["steps", "add-timeout"],
)
def test_editing_a_workflows_definition_is_refused(
    control_plane: ControlPlane, namespace: str, patch: object, field: str
) -> None:
    apply(control_plane, namespace, RUN)
    message = _patch(control_plane, namespace, patch)
    assert field in message and "start a new run" in message


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"spec": {"input": {"amount": 50}}}, "spec.input"),
        ({"spec": {"input": None}}, "spec.input"),
        ({"spec": {"output": "${ input.amount }"}}, "spec.output"),
    ],
    ids=["input", "remove-input", "add-output"],
)
def test_editing_a_workflows_input_or_output_is_refused(
    control_plane: ControlPlane, namespace: str, patch: object, field: str
) -> None:
    """Untyped, so no CRD rule sees them: the ValidatingAdmissionPolicy of crds/ does."""
    apply(control_plane, namespace, RUN)
    # The API server enforces a new policy shortly after it is created: wait for it with
    # dry runs, which change nothing.
    message = eventually(
        lambda: _patch_result(control_plane, namespace, patch, "--dry-run=server"),
        lambda result: result.returncode != 0,
        30,
        "the admission policy to be enforced",
    ).stderr
    assert message == _patch(control_plane, namespace, patch)
    assert field in message and "start a new run" in message
    assert get(control_plane, namespace, "workflow/run")["spec"]["input"] == {"amount": 10}


def test_a_changed_manifest_reapplied_is_refused(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply(control_plane, namespace, RUN)
    apply(control_plane, namespace, RUN)  # the same definition again: no change
    message = refused(control_plane, namespace, RUN.replace("name: done", "name: finish"))
    assert "spec.steps" in message and "start a new run" in message


def test_in_flight_fields_metadata_and_status_still_change(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply(control_plane, namespace, RUN)
    for patch in (
        {"spec": {"suspend": True}},
        {"spec": {"suspend": False, "ttlSecondsAfterFinished": 60}},
        {"metadata": {"labels": {"team": "payments"}}},
        {"metadata": {"annotations": {"kurable.dev/signal.APPROVE": '{"ok": true}'}}},
        {"spec": {"cancel": True}},
    ):
        control_plane.kubectl(
            "patch", "-n", namespace, "workflow/run", "--type=merge", "-p", json.dumps(patch)
        )
    # The object as this patch left it (an operator watching test namespaces may move
    # the run on right after).
    patched = control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "workflow/run",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Running", "message": "by the operator"}}),
        "-o",
        "json",
    )
    wf = json.loads(patched.stdout)
    assert wf["spec"]["cancel"] is True and wf["spec"]["ttlSecondsAfterFinished"] == 60
    assert wf["metadata"]["labels"] == {"team": "payments"}
    assert wf["status"]["message"] == "by the operator"


def test_a_running_workflow_takes_signals_but_refuses_new_steps(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, RUN)
    wait_phase(control_plane, namespace, "run", ("Running",))
    message = _patch(
        control_plane, namespace, {"spec": {"steps": [{"name": "done", "set": {"ok": 1}}]}}
    )
    assert "start a new run" in message
    control_plane.kubectl(
        "annotate", "-n", namespace, "workflow/run", "kurable.dev/signal.APPROVE={}"
    )
    wf = wait_phase(control_plane, namespace, "run", ("Succeeded",))
    assert [s["name"] for s in wf["status"]["steps"]] == ["approve", "done"]


# --- YAML 1.1 keys (issue 10, §9): kubectl reads an unquoted key n/y/no/yes/on/off as a
# boolean, so it arrives as "false"/"true".

YAML11 = "YAML 1.1"

TEMPLATE = """
apiVersion: kurable.dev/v1alpha1
kind: WorkflowTemplate
metadata: {name: tpl}
spec:
  steps: [{name: a, set: {x: 1}}]
"""

ENTITY_TYPE = """
apiVersion: kurable.dev/v1alpha1
kind: EntityType
metadata: {name: counter}
spec:
  events: {}
"""


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        (
            TEMPLATE + "  inputSchema: {type: object, properties: {n: {type: integer}}}\n",
            "spec.inputSchema.properties",
        ),
        (
            ENTITY_TYPE + "  stateSchema: {type: object, properties: {n: {type: integer}}}\n"
            "  commands: {add: {}}\n",
            "spec.stateSchema.properties",
        ),
        (
            ENTITY_TYPE + "  stateSchema: {type: object}\n"
            "  commands: {add: {inputSchema: {type: object, properties: {y: {type: string}}}}}\n",
            "spec.commands[add].inputSchema.properties",
        ),
    ],
    ids=["template-input-schema", "state-schema", "command-input-schema"],
)
def test_yaml11_boolean_property_names_are_refused_with_the_reading_named(
    control_plane: ControlPlane, namespace: str, manifest: str, field: str
) -> None:
    message = refused(control_plane, namespace, manifest)
    assert field in message and YAML11 in message and "quote the key" in message


def test_quoted_keys_are_accepted(control_plane: ControlPlane, namespace: str) -> None:
    apply(
        control_plane,
        namespace,
        HEAD.replace("bad", "quoted")
        + '  input: {"y": 1}\n  output: {"on": 1}\n  steps:\n  - {name: a, set: {"n": 1}}\n',
    )
    apply(
        control_plane,
        namespace,
        TEMPLATE + '  inputSchema: {type: object, properties: {"n": {type: integer}},'
        ' required: ["n"]}\n',
    )
    wf = get(control_plane, namespace, "workflow/quoted")
    assert wf["spec"]["steps"][0]["set"] == {"n": 1} and wf["spec"]["input"] == {"y": 1}


# --- sleep.until needs a UTC offset (issue 10, §9)


@pytest.mark.parametrize(
    "steps",
    [
        "  - {name: nap, sleep: {until: '2030-01-02T15:04:05'}}\n",
        "  - {name: nap, sleep: {until: '2030-01-02'}}\n",
        "  - {name: nap, sleep: {until: '2030-01-02 15:04:05+02:00'}}\n",
    ],
    ids=["no-offset", "date-only", "space"],
)
def test_sleep_until_without_an_offset_is_refused(
    control_plane: ControlPlane, namespace: str, steps: str
) -> None:
    message = refused(control_plane, namespace, HEAD + "  steps:\n" + steps)
    assert "sleep.until" in message and "UTC offset" in message


def test_sleep_until_with_an_offset_or_an_expression_is_accepted(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        HEAD.replace("bad", "timers") + "  steps:\n"
        "  - {name: a, sleep: {until: '2030-01-02T15:04:05Z'}}\n"
        "  - {name: b, sleep: {until: '2030-01-02T17:04:05.250+02:00'}}\n"
        "  - {name: c, sleep: {until: '${ input.deadline }'}}\n",
    )
    assert len(get(control_plane, namespace, "workflow/timers")["spec"]["steps"]) == 3
