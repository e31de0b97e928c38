"""The transfer saga across two entities: the demo's three outcomes, proven."""

from __future__ import annotations

from collections import Counter

from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import eventually, get, journal, wait_phase
from .test_entities import events_of, transfer_example

RUNS = ROOT / "examples" / "transfer" / "runs"


def balance(cp: ControlPlane, namespace: str, name: str) -> int:
    return int(get(cp, namespace, f"entity/{name}")["status"]["state"]["balance"])


def test_transfer_saga_succeeds_refuses_and_compensates(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    transfer_example(control_plane, namespace)
    control_plane.kubectl("apply", "-n", namespace, "-f", str(RUNS))
    ok = wait_phase(control_plane, namespace, "transfer-ok", ("Succeeded",))
    too_much = wait_phase(control_plane, namespace, "transfer-too-much", ("Failed",))
    nobody = wait_phase(control_plane, namespace, "transfer-to-nobody", ("Failed",))

    assert ok["status"]["output"]["moved"] == 30
    # Refused at the first step: nothing to compensate, nothing changed.
    assert too_much["status"]["reason"] == "StepFailed"
    assert too_much["status"]["error"]["step"] == "withdraw"
    assert "insufficient funds: " in too_much["status"]["message"]
    # The deposit found no wallet: the withdrawal was compensated.
    assert nobody["status"]["reason"] == "Compensated"
    assert nobody["status"]["error"]["step"] == "deposit"
    assert "'carol' not found" in nobody["status"]["message"]

    eventually(
        lambda: (
            balance(control_plane, namespace, "alice"),
            balance(control_plane, namespace, "bob"),
        ),
        lambda b: b == (70, 30),
        30,
        "alice 70 and bob 30",
    )
    alice = get(control_plane, namespace, "entity/alice")
    events = events_of(control_plane, alice)
    # withdraw 30 (ok), withdraw 20 then deposit 20 back (compensated): three events,
    # each from its own command id.
    assert [e["type"] for e in events].count("Withdrawn") == 2
    assert [e["type"] for e in events].count("Deposited") == 1
    ids = Counter(e["commandId"] for e in events)
    assert all(n == 1 for n in ids.values()), ids
    uid = nobody["metadata"]["uid"]
    assert f"{uid}/withdraw:compensate" in ids
    assert [r.step for r in journal(control_plane, uid) if getattr(r.data, "of", None)] == [
        "withdraw:compensate"
    ]
