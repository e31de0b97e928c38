"""Crash safety under faults: a seeded load of transfer sagas and errands (HTTP calls,
timers, signals) runs on two active replicas sharing the runs while one is killed,
paused past its lease, joined by a third, and while etcd and the API server are killed
and restarted. Then:
every run ended, money is conserved, every command applied once, every HTTP step
used one idempotency key, and every status agrees with its journal. Meanwhile a topic is
fed and a consumer applies each message to an entity of its key: every message's effect
exactly once, none lost, per-key order kept (tests/chaos/messages.py).

CI runs the short scale (`make test`); `make chaos` runs the long one. Choose with
KURABLE_CHAOS_SCALE (short|long) and KURABLE_CHAOS_SEED.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from kurable.testing import ControlPlane
from tests.conftest import ROOT
from tests.integration.service import Service
from tests.integration.transfers import create_wallets, run_name

from . import messages
from .harness import (
    FAULTS,
    SCALES,
    STRANDED,
    Evidence,
    Load,
    Operators,
    all_runs,
    check_all,
    errand_name,
    errand_template,
    inject,
    make_plan,
    wait_settled,
)

SCALE = os.environ.get("KURABLE_CHAOS_SCALE", "short")
SEED = int(os.environ.get("KURABLE_CHAOS_SEED", "20261125"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.timeout(3600 if SCALE == "long" else 900),
]


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own: the suite kills its etcd and API server."""
    with ControlPlane(state_dir=tmp_path / "plane", crds=ROOT / "crds") as cp:
        yield cp


def test_chaos(plane: ControlPlane, tmp_path: Path) -> None:
    cp, scale = plane, SCALES[SCALE]
    plan = make_plan(SEED, scale)
    print(f"chaos: seed {SEED}, scale {SCALE}, faults {[f.kind for f in plan.faults]}")
    namespace = f"chaos-{secrets.token_hex(3)}"
    prefix = f"/kurable-{namespace}/"
    with cp.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
    ops = Operators(cp, tmp_path / "logs", namespace, prefix)
    evidence = Evidence()
    with Service(failures=1) as service:
        try:
            ops.a = ops.start("chaos-a")
            ops.c = ops.start("chaos-c")  # both active: they share the runs
            create_wallets(cp, namespace, plan.wallets)
            no_template = {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": STRANDED},
                "spec": {"templateRef": {"name": "never-written"}},
            }
            for manifest in (
                errand_template(service.url("")),
                no_template,
                *messages.manifests(),
            ):
                cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
            start = time.monotonic()
            load = Load(plan, cp, namespace, start)
            load.start()
            fed = messages.plan(scale.messages)
            publisher = messages.Publisher(cp, namespace, prefix, fed, scale.window * 0.8)
            publisher.start()
            for fault in plan.faults:
                time.sleep(max(0.0, start + fault.at - time.monotonic()))
                print(f"chaos: {time.monotonic() - start:6.1f}s {fault.kind} ({fault.hold:.1f}s)")
                inject(fault, cp, ops, evidence)
            load.join(scale.window)
            assert load.error is None, f"seed {SEED}: delivering the load failed: {load.error}"
            assert not load.is_alive(), f"seed {SEED}: the load was not delivered in time"
            names = [run_name(t) for t in plan.transfers] + [
                errand_name(i) for i in range(scale.errands)
            ]
            found = wait_settled(cp, namespace, names, scale.settle)
            publisher.join(scale.settle)
            assert publisher.error is None, f"seed {SEED}: publishing failed: {publisher.error}"
            consumed = messages.check(cp, namespace, fed, scale.settle)
            outcome = check_all(plan, cp, namespace, prefix, found, service.seen)
            stranded = found[STRANDED]["status"]
            # A fault near the end may have left it saying `Retrying` (the outage) for a
            # few seconds more; once the operator is back it says why it waits again.
            deadline = time.monotonic() + 30
            while _stalled_reason(stranded) != "WaitingForTemplate" and (
                time.monotonic() < deadline
            ):
                time.sleep(1)
                stranded = all_runs(cp, namespace)[STRANDED]["status"]
        finally:
            ops.stop_all()

    # Every kind of fault struck, and did something.
    assert set(evidence.injected) == set(FAULTS), evidence.injected
    assert all(evidence.refused_after_pause), (
        f"seed {SEED}: a paused operator woke up and was not refused: {evidence}"
    )
    # The run with no possible progress says why, instead of hanging silently.
    stalled = [c for c in stranded.get("conditions", []) if c["type"] == "Stalled"]
    assert stalled and stalled[0]["status"] == "True", stranded
    assert stalled[0]["reason"] == "WaitingForTemplate", stalled
    assert "never-written" in stalled[0]["message"], stalled
    executors = {r.executor for j in outcome.journals.values() for r in j if r.executor}
    carried = [u for u, j in outcome.journals.items() if len({r.executor for r in j}) > 1]
    assert carried, f"seed {SEED}: no run was carried across a fault (none was in flight?)"
    print(
        f"chaos: seed {SEED}: {len(names)} runs ended, committed by {len(executors)} "
        f"executor incarnations ({len(carried)} runs carried across a fault), "
        f"{len(outcome.accepted)} commands "
        f"applied once each, {len(service.keys)} idempotency keys, "
        f"{sum(service.keys.values())} HTTP requests, {consumed}, faults {evidence.injected}"
    )


def _stalled_reason(status: dict[str, object]) -> object:
    conditions = status.get("conditions") or []
    assert isinstance(conditions, list)
    return next((c.get("reason") for c in conditions if c.get("type") == "Stalled"), None)
