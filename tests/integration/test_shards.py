"""Holds per executor and replicas that share the runs (issue 16, item 3), on the real
control plane: operators as processes, paused (SIGSTOP) and killed (SIGKILL)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from typing import Any

import pytest

from kurable.engine.shards import owner_of
from kurable.store import keys
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Isolated, eventually, journal

pytestmark = pytest.mark.slow


def _waiting_runs(names: list[str]) -> str:
    """Runs that wait for the signal GO, then finish with one more step."""
    items = [
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": {
                "steps": [
                    {"name": "go", "wait": {"signal": "GO"}},
                    {"name": "done", "set": {"ok": True}},
                ]
            },
        }
        for name in names
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _create(cp: ControlPlane, namespace: str, names: list[str]) -> None:
    """Create the runs in batches (one request each: well within kubectl's timeout)."""
    for start in range(0, len(names), 50):
        batch = _waiting_runs(names[start : start + 50])
        cp.kubectl("create", "-n", namespace, "-f", "-", input=batch, timeout=300)


def _signal_all(cp: ControlPlane, namespace: str) -> None:
    cp.kubectl(
        "annotate", "-n", namespace, "workflows", "--all", "kurable.dev/signal.GO=1", timeout=600
    )


def _runs(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listed = cp.kubectl("get", "-n", namespace, "workflows", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(listed)["items"]
    return items


def _waiting(items: list[dict[str, Any]], count: int) -> bool:
    return len(items) == count and all(
        (w.get("status") or {}).get("currentStep") == "go"
        and (w.get("status") or {}).get("phase") == "Running"
        for w in items
    )


def _holds(cp: ControlPlane, prefix: str, uids: list[str]) -> dict[str, str | None]:
    """Each run's live holder's slot: the owner key's executor, if that executor's key
    (on its lease) holds that incarnation now; else None (nobody alive holds it)."""

    async def read() -> dict[str, str | None]:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=prefix))
        try:
            live = {}
            listing = await etcd.get_prefix(keys.executors(prefix).encode())
            for kv in listing:
                live[kv.key.decode().removeprefix(keys.executors(prefix))] = kv.value.decode()
            held: dict[str, str | None] = {}
            for uid in uids:
                owner = await etcd.get(keys.owner(prefix, uid).encode())
                holder = owner.value.decode() if owner is not None else ""
                slot = holder.partition("/")[0]
                held[uid] = slot if holder and live.get(slot) == holder else None
            return held
        finally:
            await etcd.close()

    return asyncio.run(read())


def _members_seen(process: OperatorProcess, members: set[str]) -> bool:
    """The operator's log says it sees exactly `members`."""
    lines = re.findall(r"members: ([^(]*) \(were", process.log_path.read_text())
    return bool(lines) and set(lines[-1].split(", ")) == members


def test_every_waiting_run_is_held_again_soon_after_a_pause_past_the_lease(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    namespace, prefix = isolated.namespace, isolated.prefix
    names = [f"held-{n}" for n in range(30)]
    operator = isolated.operator("solo", "--lease-ttl", "2").start()
    try:
        _create(control_plane, namespace, names)
        items = eventually(
            lambda: _runs(control_plane, namespace),
            lambda items: _waiting(items, len(names)),
            120,
            "every run to wait for its signal",
        )
        uids = [w["metadata"]["uid"] for w in items]
        eventually(
            lambda: _holds(control_plane, prefix, uids),
            lambda held: set(held.values()) == {"solo"},
            30,
            "every run held by solo",
        )
        assert {w["status"].get("executor") for w in items} == {"solo"}

        operator.pause()
        # Frozen past its 2 s lease: the lease expires, so nobody alive holds the runs.
        eventually(
            lambda: _holds(control_plane, prefix, uids),
            lambda held: set(held.values()) == {None},
            30,
            "the paused operator's lease to expire",
        )
        operator.resume()
        resumed = time.monotonic()
        eventually(
            lambda: _holds(control_plane, prefix, uids),
            lambda held: set(held.values()) == {"solo"},
            15,
            "every waiting run held again after the pause",
        )
        took = time.monotonic() - resumed
        print(f"all {len(uids)} waiting runs held again {took:.1f}s after SIGCONT")

        _signal_all(control_plane, namespace)
        eventually(
            lambda: _runs(control_plane, namespace),
            lambda items: all((w.get("status") or {}).get("phase") == "Succeeded" for w in items),
            60,
            "every run to finish once signalled",
        )
    finally:
        operator.resume()
        operator.stop()
    # The lease was lost and granted again once, with no run given up on the way.
    text = (isolated.logs / "solo.log").read_text()
    assert "executor lease expired" in text
    assert "took run" not in text


@pytest.mark.timeout(1200)
def test_three_replicas_share_the_runs_and_hand_them_over_when_one_dies_or_one_joins(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    namespace, prefix = isolated.namespace, isolated.prefix
    count = 300
    names = [f"shared-{n:03d}" for n in range(count)]

    def replica(slot: str) -> OperatorProcess:
        return isolated.operator(slot, "--lease-ttl", "3")

    replicas = {slot: replica(slot).start() for slot in ("a", "b", "c")}
    try:
        for process in replicas.values():
            eventually(
                lambda p=process: _members_seen(p, {"a", "b", "c"}),  # type: ignore[misc]
                bool,
                30,
                "each replica to see the three members",
            )
        _create(control_plane, namespace, names)
        items = eventually(
            lambda: _runs(control_plane, namespace),
            lambda items: _waiting(items, count),
            240,
            "every run to wait for its signal",
        )
        uids = [w["metadata"]["uid"] for w in items]
        first = {"a", "b", "c"}
        held = eventually(
            lambda: _holds(control_plane, prefix, uids),
            lambda held: all(held[u] == owner_of(u, first) for u in uids),
            60,
            "each run held by the replica that owns it",
        )
        spread = Counter(held.values())
        print(f"three replicas: {dict(spread)}")
        assert set(spread) == first
        shown = Counter(w["status"].get("executor") for w in items)
        assert shown == spread  # status.executor names the driver

        # SIGKILL b: its runs move to a and c within its lease (3 s) and a few seconds.
        replicas["b"].kill()
        killed = time.monotonic()
        second = {"a", "c"}
        eventually(
            lambda: _holds(control_plane, prefix, uids),
            lambda held: all(held[u] == owner_of(u, second) for u in uids),
            60,
            "b's runs to move to a and c",
        )
        print(
            f"b's {spread['b']} runs held by a and c {time.monotonic() - killed:.1f}s after SIGKILL"
        )

        # d joins: it takes its share, handed over by a and c.
        replicas["d"] = replica("d").start()
        joined = time.monotonic()
        third = {"a", "c", "d"}
        held = eventually(
            lambda: _holds(control_plane, prefix, uids),
            lambda held: all(held[u] == owner_of(u, third) for u in uids),
            60,
            "d to take its share",
        )
        spread = Counter(held.values())
        print(f"d joined: {dict(spread)} {time.monotonic() - joined:.1f}s after it was ready")
        assert spread["d"] > 0

        _signal_all(control_plane, namespace)
        eventually(
            lambda: _runs(control_plane, namespace),
            lambda items: all((w.get("status") or {}).get("phase") == "Succeeded" for w in items),
            180,
            "every run to finish once signalled",
        )
    finally:
        for process in replicas.values():
            process.stop()

    for uid in uids:
        records = journal(control_plane, uid, prefix)
        assert [r.seq for r in records] == list(range(len(records)))
        steps = Counter((r.type, r.step) for r in records if r.step)
        assert all(n == 1 for n in steps.values()), steps  # no step committed twice
        by = [(r.executor or "").partition("/")[0] for r in records]
        # Started by its owner among a, b, c; finished by its owner among a, c, d: no
        # other replica ever committed for it.
        assert by[0] == owner_of(uid, first), (uid, by)
        assert records[-1].type == "WorkflowFinished"
        after_signal = [s for r, s in zip(records, by, strict=True) if r.step == "done"]
        assert set(after_signal) | {by[-1]} == {owner_of(uid, third)}, (uid, by)
