"""examples/choreography/: an order saga by events alone. order-1 is confirmed; order-2's
payment fails and events compensate it (stock released, order cancelled)."""

from __future__ import annotations

from typing import Any

import pytest

from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import apply, eventually, get
from .test_consumers import consumer_status

pytestmark = pytest.mark.integration

CHOREOGRAPHY = ROOT / "examples" / "choreography"


def states(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    return {
        name: (get(cp, namespace, f"entity/{name}").get("status") or {}).get("state")
        for name in ("order-1", "order-2", "widget", "payments")
    }


def test_the_order_saga_completes_one_order_and_compensates_the_other_by_events(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    for path in sorted(CHOREOGRAPHY.glob("*.yaml")):
        apply(cp, namespace, path)
    apply(cp, namespace, CHOREOGRAPHY / "checkout" / "checkout.yaml")
    final = eventually(
        lambda: states(cp, namespace),
        lambda s: (
            (s["order-1"] or {}).get("status") == "confirmed"
            and (s["order-2"] or {}).get("status") == "cancelled"
            and (s["widget"] or {}).get("reserved") == 2
        ),
        120,
        "order-1 confirmed, order-2 cancelled and its stock released",
    )
    assert final["widget"] == {"available": 8, "reserved": 2}
    assert final["payments"] == {"charged": 40}
    assert final["order-2"]["reason"] == "over the card limit of 100"
    for name in ("reserve-stock", "release-stock", "cancel-order", "confirm-order"):
        status = consumer_status(cp, namespace, name)
        assert status.get("failed") == 0 and status.get("deadLettered") == 0, (name, status)
