"""A watch that goes silent without closing: resync keeps runs moving and the liveness
probe fails.

The operator talks to the API server through a proxy; freezing it stops every open
connection (kopf's watch streams among them) without closing any, while new
connections still work. kopf notices a dead stream only after its inactivity timeout
(70 s); everything here must happen well before that, through resync alone
(`--resync-interval 2`).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kurable.testing import ControlPlane, FreezableProxy, OperatorProcess

from .conftest import Isolated, apply, eventually, get, journal, wait_phase, workflow

pytestmark = pytest.mark.slow

RESYNC = 2.0
WITHIN = 30.0
"""Everything must happen this soon after the freeze: kopf's own inactivity timeout
(70 s) would reconnect the watch, and the test would prove nothing."""


@dataclass
class Silenced:
    cp: ControlPlane
    namespace: str
    prefix: str
    proxy: FreezableProxy
    operator: OperatorProcess

    def log(self) -> str:
        return self.operator.log_path.read_text(errors="replace")

    def freeze(self) -> float:
        """Silence every connection the operator has open; return when."""
        assert self.proxy.freeze() > 0, "the operator has no connection to freeze"
        return time.monotonic()

    def healthz(self) -> int:
        url = f"http://127.0.0.1:{self.operator.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as e:
            return e.code


@pytest.fixture
def silenced(control_plane: ControlPlane, isolated: Isolated) -> Iterator[Silenced]:
    """An operator whose connections to the API server go through a freezable proxy,
    with a first run completed (so its watch is known to deliver)."""
    with FreezableProxy(control_plane.server) as proxy:
        operator = isolated.operator(
            "resync-test",
            "--resync-interval",
            str(RESYNC),
            "--api-timeout",
            "3",
            env=control_plane.env(server=proxy.url),
        )
        with operator:
            apply(
                control_plane,
                isolated.namespace,
                workflow("warm-up", steps=[{"name": "one", "set": {"a": 1}}]),
            )
            wait_phase(control_plane, isolated.namespace, "warm-up", ("Succeeded",), timeout=60)
            yield Silenced(control_plane, isolated.namespace, isolated.prefix, proxy, operator)
            proxy.thaw()


def test_a_waiting_run_sees_its_signal_while_the_watch_is_silent(silenced: Silenced) -> None:
    cp, namespace = silenced.cp, silenced.namespace
    apply(
        cp,
        namespace,
        workflow(
            "approval",
            steps=[
                {"name": "hold", "wait": {"signal": "GO"}},
                {"name": "after", "set": {"approved": "${ steps.hold.output.by }"}},
            ],
        ),
    )
    eventually(
        lambda: get(cp, namespace, "workflow/approval"),
        lambda wf: (wf.get("status") or {}).get("currentStep") == "hold",
        30,
        "the run to wait for its signal",
    )
    frozen_at = silenced.freeze()
    # Straight to the API server: the operator's watch does not see this.
    cp.kubectl(
        "annotate", "-n", namespace, "workflow/approval", 'kurable.dev/signal.GO={"by":"ann"}'
    )

    done = wait_phase(cp, namespace, "approval", ("Succeeded", "Failed"), timeout=WITHIN)
    assert time.monotonic() - frozen_at < WITHIN + 5
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["steps"][-1]["output"] == {"approved": "ann"}
    # The watch really was silent: it still had not delivered the change a whole
    # resync interval after the run succeeded.
    eventually(silenced.log, lambda log: "the watch looks silent" in log, 10, "the ERROR")


def test_a_workflow_created_while_the_watch_is_silent_runs_to_success(
    silenced: Silenced,
) -> None:
    cp, namespace = silenced.cp, silenced.namespace
    frozen_at = silenced.freeze()
    apply(
        cp,
        namespace,
        workflow(
            "stranded",
            steps=[
                {"name": "first", "set": {"n": 1}},
                {"name": "nap", "sleep": {"duration": "1s"}},
                {"name": "last", "set": {"m": "${ vars.n + 1 }"}},
            ],
        ),
    )

    done = wait_phase(cp, namespace, "stranded", ("Succeeded", "Failed"), timeout=WITHIN)
    assert time.monotonic() - frozen_at < WITHIN + 5
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["steps"][-1]["output"] == {"m": 2}
    log = silenced.log()
    assert f"[{namespace}/stranded] adopted" in log, log[-3000:]
    # Its Kubernetes Events were posted without kopf's help.
    events = cp.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=stranded"
    ).stdout
    assert "Succeeded" in events, events


def test_liveness_fails_once_resync_notices_the_watch_missed_an_object(
    silenced: Silenced,
) -> None:
    cp, namespace = silenced.cp, silenced.namespace
    assert silenced.healthz() == 200
    frozen_at = silenced.freeze()
    apply(cp, namespace, workflow("unseen", steps=[{"name": "one", "set": {"a": 1}}]))

    eventually(silenced.healthz, lambda status: status != 200, WITHIN, "/healthz to fail")
    assert time.monotonic() - frozen_at < WITHIN + 5
    assert silenced.healthz() == 500
    log = silenced.log()
    assert "the watch looks silent" in log
    assert f"workflow {namespace}/unseen" in log

    # Once the watch delivers again, the probe recovers.
    silenced.proxy.thaw()
    eventually(silenced.healthz, lambda status: status == 200, WITHIN, "/healthz to recover")


def test_an_adopted_run_keeps_one_driver_when_the_watch_returns(
    silenced: Silenced,
) -> None:
    cp, namespace = silenced.cp, silenced.namespace
    silenced.freeze()
    apply(
        cp,
        namespace,
        workflow(
            "handover",
            steps=[
                {"name": "first", "set": {"n": 1}},
                {"name": "nap", "sleep": {"duration": "15s"}},
                {"name": "last", "set": {"m": 2}},
            ],
        ),
    )
    eventually(
        silenced.log, lambda log: f"[{namespace}/handover] adopted" in log, WITHIN, "the adoption"
    )
    silenced.proxy.thaw()  # the watch delivers again: its events reach the same driver
    done = wait_phase(cp, namespace, "handover", ("Succeeded", "Failed"), timeout=WITHIN)
    assert done["status"]["phase"] == "Succeeded"

    records = journal(cp, done["metadata"]["uid"], silenced.prefix)
    assert [(r.type, r.step) for r in records] == [
        ("WorkflowStarted", None),
        ("StepCompleted", "first"),
        ("StepStarted", "nap"),
        ("StepCompleted", "nap"),
        ("StepCompleted", "last"),
        ("WorkflowFinished", None),
    ]
    # One process, one fence, and never a second driver waiting for it.
    assert len({r.executor for r in records}) == 1
    assert "is held by executor" not in silenced.log()
