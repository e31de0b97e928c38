"""Signals through the endpoint: journaled with their source, and an Idempotency-Key that
an endpoint claimed before dying (no annotation written) does not swallow the resend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kurable.store import signals as signal_keys
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Door, apply, eventually, get, journal, wait_phase
from .test_endpoint_routes import APPROVAL

pytestmark = pytest.mark.integration


def claim(cp: ControlPlane, uid: str, key: str, value: dict[str, Any]) -> None:
    """What an endpoint that died right after claiming `key` left in etcd."""

    async def write() -> None:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint))
        try:
            assert await signal_keys.claim_signal_key(etcd, "/kurable/", uid, key, value) is None
        finally:
            await etcd.close()

    asyncio.run(write())


def test_a_resend_delivers_a_signal_whose_first_send_died_after_claiming_its_key(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    apply(control_plane, namespace, APPROVAL)
    with door.client() as kurable:
        run = kurable.start(namespace, "approval", name="crashed")
        # The dead endpoint's claim: older than any send still in flight, never delivered.
        stale = time.time() - 60
        claim(
            control_plane,
            run["uid"],
            "k-1",
            {"signal": "APPROVE", "payload": '{"by":"ann"}', "at": stale},
        )
        sent = kurable.signal(namespace, "crashed", "APPROVE", {"by": "ann"}, "k-1")
        assert sent == {"signal": "APPROVE", "duplicate": False}  # delivered, not swallowed
        finished = wait_phase(control_plane, namespace, "crashed", ("Succeeded",))
        assert finished["status"]["output"] == {"by": "ann"}
        again = kurable.signal(namespace, "crashed", "APPROVE", {"by": "ann"}, "k-1")
        assert again == {"signal": "APPROVE", "duplicate": True}
    [received] = [r for r in journal(control_plane, run["uid"]) if r.type == "SignalReceived"]
    assert received.data.to_wire() == {
        "name": "APPROVE",
        "payload": {"by": "ann"},
        "source": "endpoint",
        "idempotencyKey": signal_keys.key_digest("k-1"),
    }
    sent_keys = {"kurable.dev/signal.APPROVE", "kurable.dev/signal-endpoint.APPROVE"}
    eventually(  # both annotations removed together once journaled
        lambda: get(control_plane, namespace, "workflow/crashed")["metadata"].get("annotations"),
        lambda annotations: not sent_keys & set(annotations or {}),
        60,
        "the signal's annotations to be removed",
    )


def test_an_undelivered_claim_whose_signal_is_journaled_is_a_duplicate(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    apply(control_plane, namespace, APPROVAL)
    with door.client() as kurable:
        run = kurable.start(namespace, "approval", name="settled")
        sent = kurable.signal(namespace, "settled", "APPROVE", {"by": "bo"}, "k-2")
        assert not sent["duplicate"]
        wait_phase(control_plane, namespace, "settled", ("Succeeded",))

        # As if the endpoint died after the annotation but before marking the claim
        # delivered: the claim is put back undelivered and old.
        async def unsettle() -> None:
            etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint))
            try:
                await signal_keys.release_signal_key(etcd, "/kurable/", run["uid"], "k-2")
                value = {"signal": "APPROVE", "payload": '{"by":"bo"}', "at": time.time() - 60}
                await signal_keys.claim_signal_key(etcd, "/kurable/", run["uid"], "k-2", value)
            finally:
                await etcd.close()

        asyncio.run(unsettle())
        again = kurable.signal(namespace, "settled", "APPROVE", {"by": "bo"}, "k-2")
        assert again == {"signal": "APPROVE", "duplicate": True}  # found in the journal
    received = [r for r in journal(control_plane, run["uid"]) if r.type == "SignalReceived"]
    assert len(received) == 1
