"""A paused operator (SIGSTOP beyond its lease) wakes up and cannot commit: the run it
held was taken over, and nothing is journaled twice."""

from __future__ import annotations

from collections import Counter

import pytest

from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Isolated, apply, eventually, get, journal, wait_phase
from .service import Service

pytestmark = pytest.mark.slow


def test_a_paused_operators_commits_are_refused_after_another_took_over(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    namespace, prefix, logs = isolated.namespace, isolated.prefix, isolated.logs

    def operator(executor: str) -> OperatorProcess:
        return isolated.operator(executor, "--lease-ttl", "2")

    # The service holds each call until two are in flight: replica-a's call is in
    # flight (its run acts, so its task holds what it read) when it is paused, and
    # replica-b's call of the same step frees both.
    with Service(gather=2) as service:
        paused = operator("replica-a").start()
        other: OperatorProcess | None = None
        try:
            apply(control_plane, namespace, {
                "apiVersion": "kurable.dev/v1alpha1", "kind": "Workflow",
                "metadata": {"name": "contested"},
                "spec": {"steps": [
                    {"name": "first", "set": {"a": 1}},
                    {"name": "nap", "http": {"url": service.url("/nap")}},
                    {"name": "last", "set": {"b": 2}},
                ]},
            })  # fmt: skip
            eventually(lambda: service.in_flight, lambda n: n == 1, 30, "replica-a's call")
            uid = get(control_plane, namespace, "workflow/contested")["metadata"]["uid"]
            paused.pause()
            # Frozen past its 2 s lease: replica-b takes the run over and finishes it
            # while replica-a still believes it holds the run.
            other = operator("replica-b").start()
            done = wait_phase(control_plane, namespace, "contested", ("Succeeded",), timeout=60)
            paused.resume()
            # replica-a wakes up, its call has returned: it tries to commit, is refused
            # (then stands down). On a loaded machine that may take more than a moment.
            # Or its membership check runs first on waking and hands the run over, which
            # cancels the task before it commits: the journal below shows either way that
            # nothing was committed twice (test_store proves the refusal itself).
            eventually(
                lambda: (logs / "replica-a.log").read_text(),
                lambda text: "lost the run" in text or "handed 1 runs over" in text,
                60,
                "replica-a's refused commit or its hand-over",
            )
            records = journal(control_plane, uid, prefix)
        finally:
            paused.resume()
            paused.stop()
            if other is not None:
                other.stop()

    assert [r.seq for r in records] == list(range(len(records)))
    steps = Counter((r.type, r.step) for r in records if r.step)
    assert all(n == 1 for n in steps.values()), steps
    by = {
        r.step: (r.executor or "").partition("/")[0] for r in records if r.type == "StepCompleted"
    }
    assert by["first"] == "replica-a"
    assert by["nap"] == by["last"] == "replica-b"
    assert records[-1].type == "WorkflowFinished"
    assert done["status"]["phase"] == "Succeeded"
    assert len(records) == 6
