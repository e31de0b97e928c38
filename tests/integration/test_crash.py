"""kill -9 of the operator mid-run: nothing committed runs again, timers keep their deadline."""

from __future__ import annotations

import time

import pytest

from kurable.engine.journal import parse_time
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Isolated, apply, eventually, get, journal, wait_phase, workflow
from .service import Service

pytestmark = pytest.mark.slow


def test_sigkill_during_sleep_resumes_without_repeating_steps(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    namespace, prefix = isolated.namespace, isolated.prefix

    # The same executor id for both processes: a container restarted in its pod.
    def operator() -> OperatorProcess:
        return isolated.operator("crash-test")

    first = operator().start()
    try:
        apply(
            control_plane,
            namespace,
            {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "survivor"},
                "spec": {
                    "steps": [
                        {"name": "first", "set": {"token": "${ workflow.uid + '-once' }"}},
                        {"name": "nap", "sleep": {"duration": "10s"}},
                        {"name": "last", "set": {"seen": "${ vars.token }"}},
                    ]
                },
            },
        )
        wf = eventually(
            lambda: get(control_plane, namespace, "workflow/survivor"),
            lambda w: (w.get("status") or {}).get("currentStep") == "nap",
            30,
            "the run to be sleeping",
        )
        time.sleep(1.0)
        first.kill()
        killed_at = time.time()
    finally:
        first.stop()
    uid = wf["metadata"]["uid"]
    before = journal(control_plane, uid, prefix)
    wake_at = parse_time(next(r for r in before if r.type == "StepStarted").data.wake_at)
    assert killed_at < wake_at.timestamp(), "the kill must land during the sleep"

    time.sleep(1.0)
    with operator() as second:
        # Ready: from here the restarted operator picks the run up within moments, however
        # long its start took on a loaded machine.
        up_at = time.time()
        wf = wait_phase(control_plane, namespace, "survivor", ("Succeeded",), timeout=60)
        after = journal(control_plane, uid, prefix)
    assert second.process is not None

    # Nothing committed before the crash was rewritten or repeated.
    assert after[: len(before)] == before
    first_steps = [r for r in after if r.step == "first"]
    assert [r.type for r in first_steps] == ["StepCompleted"], first_steps
    naps = [r for r in after if r.step == "nap"]
    assert [r.type for r in naps] == ["StepStarted", "StepCompleted"]
    # Different incarnations committed before and after the crash.
    assert first_steps[0].executor != naps[1].executor
    assert first_steps[0].executor.startswith("crash-test/")
    # The timer kept its deadline: it ended at the original wake-up time, not a whole
    # sleep (10 s) after the restart, which is what a timer started afresh would do.
    woke = parse_time(naps[1].at).timestamp()
    assert woke >= wake_at.timestamp(), "the sleep ended before its deadline"
    assert woke < max(wake_at.timestamp(), up_at) + 8.0, "the sleep started again after the restart"
    assert wf["status"]["steps"][-1]["output"] == {"seen": f"{uid}-once"}


def test_sigkill_during_an_http_call_resends_it_with_the_same_idempotency_key(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    """The crash window of an outside effect: the request was sent, its answer never
    journaled. The next incarnation sends it again, with the same key."""
    namespace, prefix = isolated.namespace, isolated.prefix
    # The service holds each request until two are in flight: the first incarnation's
    # call is still held when the operator dies; the second incarnation's call frees it.
    with Service(gather=2) as service:
        first = isolated.operator("crash-http").start()
        try:
            apply(
                control_plane,
                namespace,
                workflow(
                    "pay",
                    steps=[{"name": "charge", "http": {"url": service.url("/charge")}}],
                    output={"calls": "${ steps.charge.output.calls }"},
                ),
            )
            eventually(
                lambda: service.in_flight,
                lambda n: n == 1,
                30,
                "the first incarnation's call to be held",
            )
            first.kill()
        finally:
            first.stop()
        with isolated.operator("crash-http") as second:
            wf = wait_phase(control_plane, namespace, "pay", ("Succeeded",), timeout=60)
        assert second.process is not None
    uid = wf["metadata"]["uid"]
    assert dict(service.keys) == {f"{uid}/charge": 2}, service.keys
    assert wf["status"]["output"] == {"calls": 2}
    records = journal(control_plane, uid, prefix)
    completed = [r for r in records if r.type == "StepCompleted" and r.step == "charge"]
    started = [r for r in records if r.type == "StepStarted" and r.step == "charge"]
    assert len(completed) == 1, records
    assert started[0].executor != completed[0].executor, records
