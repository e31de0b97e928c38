"""Signals sent with kubectl annotate (issue 10, §4): each send is one signal.

The operator consumes a signal annotation (journals it, then removes it), so a deliberate
resend of the same payload is a new signal, and the same annotation observed any number
of times is journaled once. The crash windows are covered over every interleaving by
tests/unit/engine/test_signals.py."""

from __future__ import annotations

import json

from kurable.engine.signals import CONSUMED_ANNOTATION
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, eventually, get, journal, wait_phase, workflow

APPROVE = "kurable.dev/signal.APPROVE"


def _annotations(cp: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    wf = get(cp, namespace, f"workflow/{name}")
    return dict(wf["metadata"].get("annotations") or {})


def _at_step(cp: ControlPlane, namespace: str, name: str, step: str) -> None:
    eventually(
        lambda: get(cp, namespace, f"workflow/{name}"),
        lambda w: (w.get("status") or {}).get("currentStep") == step,
        30,
        f"{name} to wait in {step}",
    )


def test_the_same_payload_sent_again_reaches_the_second_wait(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    """The field report: send {"ok":true}, remove the annotation, send {"ok":true} again."""
    apply(
        control_plane,
        namespace,
        workflow(
            "twice",
            steps=[
                {"name": "first", "wait": {"signal": "APPROVE"}},
                {"name": "second", "wait": {"signal": "APPROVE"}},
            ],
        ),
    )
    _at_step(control_plane, namespace, "twice", "first")
    send = ("annotate", "-n", namespace, "workflow/twice", f'{APPROVE}={{"ok":true}}')
    control_plane.kubectl(*send)
    eventually(
        lambda: _annotations(control_plane, namespace, "twice"),
        lambda a: APPROVE not in a,
        30,
        "the operator to consume the first send",
    )
    # The user's removal finds it gone already; the resend needs no --overwrite.
    control_plane.kubectl("annotate", "-n", namespace, "workflow/twice", f"{APPROVE}-")
    control_plane.kubectl(*send)
    wf = wait_phase(control_plane, namespace, "twice", ("Succeeded",), timeout=30)
    steps = {s["name"]: s for s in wf["status"]["steps"]}
    assert steps["first"]["output"] == {"ok": True}
    assert steps["second"]["output"] == {"ok": True}
    records = journal(control_plane, wf["metadata"]["uid"])
    received = [r for r in records if r.type == "SignalReceived"]
    assert [(r.data.name, r.data.payload) for r in received] == [("APPROVE", {"ok": True})] * 2
    annotations = wf["metadata"].get("annotations") or {}
    assert annotations.get(CONSUMED_ANNOTATION) == str(received[-1].seq)


def test_one_annotation_observed_many_times_is_journaled_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow(
            "once",
            steps=[
                {"name": "hold", "wait": {"signal": "GO"}},
                {"name": "first", "wait": {"signal": "APPROVE"}},
                {
                    "name": "second",
                    "wait": {"signal": "APPROVE", "timeout": "2s"},
                    "onFailure": {"goto": "end"},
                },
                {"name": "end", "set": {"done": True}},
            ],
        ),
    )
    _at_step(control_plane, namespace, "once", "hold")
    control_plane.kubectl("annotate", "-n", namespace, "workflow/once", f"{APPROVE}={{}}")
    # Every label change is one more observation of the object by the operator.
    for i in range(8):
        control_plane.kubectl(
            "patch", "-n", namespace, "workflow/once", "--type=merge",
            "-p", json.dumps({"metadata": {"labels": {"poke": str(i)}}}),
        )  # fmt: skip
    control_plane.kubectl("annotate", "-n", namespace, "workflow/once", "kurable.dev/signal.GO=1")
    wf = wait_phase(control_plane, namespace, "once", ("Succeeded",), timeout=30)
    steps = {s["name"]: s for s in wf["status"]["steps"]}
    assert steps["first"]["output"] == {}
    assert steps["second"]["phase"] == "Failed"  # the one send was taken once
    records = journal(control_plane, wf["metadata"]["uid"])
    assert sorted(r.data.name for r in records if r.type == "SignalReceived") == ["APPROVE", "GO"]
    assert not [k for k in wf["metadata"].get("annotations") or {} if k.startswith(APPROVE)]


def test_a_signal_that_is_not_json_is_removed_with_a_warning(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(
        control_plane,
        namespace,
        workflow("bad", steps=[{"name": "w", "wait": {"signal": "APPROVE"}}]),
    )
    _at_step(control_plane, namespace, "bad", "w")
    control_plane.kubectl("annotate", "-n", namespace, "workflow/bad", f"{APPROVE}={{oops")
    eventually(
        lambda: _annotations(control_plane, namespace, "bad"),
        lambda a: APPROVE not in a,
        30,
        "the unreadable signal to be removed",
    )
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=InvalidSignal", "-o", "json"
    ).stdout
    assert "not JSON" in events
    control_plane.kubectl("annotate", "-n", namespace, "workflow/bad", f"{APPROVE}=true")
    wf = wait_phase(control_plane, namespace, "bad", ("Succeeded",), timeout=30)
    assert wf["status"]["steps"][0]["output"] is True
