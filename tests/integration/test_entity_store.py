"""The entity store against the real etcd: one transaction per command, per-type stream, races."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
import yaml

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine.entities import CommandRejected
from kurable.executor import commands
from kurable.executor.commands import EntityBusy
from kurable.store import entities as store
from kurable.store import keys
from kurable.store.entities import EntityRef
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane
from tests.conftest import ROOT

WALLET = EntityTypeSpec.model_validate(
    yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())["spec"]
)


def run(cp: ControlPlane, scenario: Any) -> Any:
    prefix = f"/kurable-entities-{secrets.token_hex(4)}/"

    async def main() -> Any:
        etcd = [await connect(EtcdConfig(cp.etcd_endpoint, prefix)) for _ in range(3)]
        try:
            return await scenario(etcd, prefix)
        finally:
            for client in etcd:
                await client.close()

    return asyncio.run(main())


def test_events_also_go_to_the_per_type_stream_in_commit_order(control_plane: ControlPlane) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        alice = EntityRef("ns", "alice", "uid-a", "wallet", {"balance": 10})
        bob = EntityRef("ns", "bob", "uid-b", "wallet", {"balance": 0})
        await commands.execute_command(
            etcd[0], prefix, alice, WALLET, "withdraw", {"amount": 3}, "1"
        )
        await commands.execute_command(etcd[0], prefix, bob, WALLET, "deposit", {"amount": 3}, "2")
        await commands.execute_command(
            etcd[0], prefix, alice, WALLET, "deposit", {"amount": 1}, "3"
        )
        rows = await etcd[0].get_prefix(
            keys.type_events(prefix, "ns", "wallet").encode(), sort_target="mod"
        )
        stream = [json.loads(kv.value) for kv in rows]
        assert [(e["id"], e["type"], e["commandId"]) for e in stream] == [
            ("uid-a/1", "Withdrawn", "1"),
            ("uid-b/1", "Deposited", "2"),
            ("uid-a/2", "Deposited", "3"),
        ]
        assert stream[1]["entity"] == {"namespace": "ns", "name": "bob", "uid": "uid-b"}
        revisions = [kv.mod_revision for kv in rows]
        assert revisions == sorted(revisions)
        assert await store.forget_entity(etcd[0], prefix, alice) == 7  # 1+2+2 own, 2 typed
        left = await etcd[0].get_prefix(keys.type_events(prefix, "ns", "wallet").encode())
        assert [json.loads(kv.value)["id"] for kv in left] == ["uid-b/1"]

    run(control_plane, scenario)


def test_writers_without_a_shared_lock_still_apply_each_command_once(
    control_plane: ControlPlane,
) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        ref = EntityRef("ns", "hot", "uid-h", "wallet", {"balance": 0})
        results = await asyncio.gather(
            *(
                commands.execute_command(
                    etcd[i % 3], prefix, ref, WALLET, "deposit", {"amount": 1}, f"c{i % 30}"
                )
                for i in range(60)  # every id sent twice, by different clients
            )
        )
        assert sum(not r.duplicate for r in results) == 30
        assert sorted(r.version for r in results if not r.duplicate) == list(range(1, 31))
        by_id: dict[str, set[int]] = {}
        for i, r in enumerate(results):
            by_id.setdefault(f"c{i % 30}", set()).add(r.version)
        assert all(len(versions) == 1 for versions in by_id.values())  # same answer per id
        snapshot = await store.load_snapshot(etcd[0], prefix, ref)
        assert snapshot is not None and (snapshot.version, snapshot.state) == (30, {"balance": 30})
        events = await store.load_events(etcd[0], prefix, ref)
        assert sorted(e["commandId"] for e in events) == sorted(f"c{i}" for i in range(30))

    run(control_plane, scenario)


def test_an_invalid_initial_state_rejects_commands_and_writes_no_snapshot(
    control_plane: ControlPlane,
) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        ref = EntityRef("ns", "neg", "uid-n", "wallet", {"balance": -1})
        with pytest.raises(CommandRejected) as rejected:
            await commands.execute_command(
                etcd[0], prefix, ref, WALLET, "deposit", {"amount": 1}, "x"
            )
        assert rejected.value.reason == "InvalidState"
        assert await store.load_snapshot(etcd[0], prefix, ref) is None

    run(control_plane, scenario)


def test_a_command_that_keeps_losing_the_race_gives_up_without_applying(
    control_plane: ControlPlane,
) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        ref = EntityRef("ns", "busy", "uid-b", "wallet", {"balance": 0})
        key = keys.entity_snapshot(prefix, "ns", "busy", "uid-b").encode()
        await store.create_entity(etcd[0], prefix, ref, {"balance": 0})
        original = (await etcd[0].get(key)).value

        class Interfered:
            """The real client, except that another writer updates the snapshot just
            before each of its commits (the worst timing a real race can have)."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner
                self.transactions = inner.transactions

            async def transaction(self, compare: Any, success: Any, failure: Any) -> Any:
                if compare:
                    await etcd[1].put(key, original)
                return await self.inner.transaction(compare, success, failure)

        with pytest.raises(EntityBusy, match="command 'late' was not applied"):
            await commands.execute_command(
                Interfered(etcd[0]), prefix, ref, WALLET, "deposit", {"amount": 1}, "late",
                max_attempts=3,
            )  # fmt: skip
        assert await store.load_events(etcd[0], prefix, ref) == []
        assert (
            await etcd[0].get(keys.entity_command(prefix, "ns", "busy", "uid-b", "late").encode())
            is None
        )

    run(control_plane, scenario)


def test_commands_one_process_sends_at_once_commit_in_arrival_order_and_share_transactions(
    control_plane: ControlPlane,
) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        ref = EntityRef("ns", "queued", "uid-q", "wallet", {"balance": 0})
        results = await asyncio.gather(
            *(
                commands.execute_command(
                    etcd[0], prefix, ref, WALLET, "deposit", {"amount": i + 1}, f"q{i}"
                )
                for i in range(16)
            )
        )
        # Queued in arrival order: the i-th sent is the i-th applied, nobody overtakes.
        assert [r.version for r in results] == list(range(1, 17))
        assert [r.reply for r in results] == [sum(range(1, i + 2)) for i in range(16)]
        assert [r.snapshot.version for r in results if r.snapshot] == list(range(1, 17))
        events = await store.load_events(etcd[0], prefix, ref)
        assert [e["commandId"] for e in events] == [f"q{i}" for i in range(16)]
        # Not one transaction each: commands that waited together committed together.
        rows = await etcd[0].get_prefix(
            keys.entity_events(prefix, "ns", "queued", "uid-q").encode()
        )
        assert len({kv.mod_revision for kv in rows}) < 16
        assert commands._QUEUES[etcd[0]] == {}  # the idle queue is forgotten

    run(control_plane, scenario)


def test_a_sender_cancelled_while_waiting_applies_nothing_and_the_others_apply_once(
    control_plane: ControlPlane,
) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        ref = EntityRef("ns", "cancel", "uid-c", "wallet", {"balance": 0})
        senders = [
            asyncio.create_task(
                commands.execute_command(
                    etcd[0], prefix, ref, WALLET, "deposit", {"amount": 1}, f"w{i}"
                )
            )
            for i in range(8)
        ]
        await asyncio.sleep(0)  # every sender has queued its command; none is taken yet
        senders[5].cancel()
        results = await asyncio.gather(*senders, return_exceptions=True)
        assert isinstance(results[5], asyncio.CancelledError)
        assert sorted(r.version for r in results if isinstance(r, commands.CommandResult)) == [
            *range(1, 8)
        ]
        dedup = keys.entity_command(prefix, "ns", "cancel", "uid-c", "w5").encode()
        assert await etcd[0].get(dedup) is None
        again = await commands.execute_command(
            etcd[0], prefix, ref, WALLET, "deposit", {"amount": 1}, "w5"
        )
        assert (again.version, again.duplicate) == (8, False)
        events = await store.load_events(etcd[0], prefix, ref)
        assert sorted(e["commandId"] for e in events) == sorted(f"w{i}" for i in range(8))

    run(control_plane, scenario)


def test_a_batch_that_spans_a_rejection_records_it_at_its_place_and_applies_the_rest(
    control_plane: ControlPlane,
) -> None:
    async def scenario(etcd: list[Any], prefix: str) -> None:
        ref = EntityRef("ns", "mixed", "uid-m", "wallet", {"balance": 0})
        sent = [
            ("deposit", {"amount": 5}, "m0"),
            ("withdraw", {"amount": 7}, "m1"),  # more than the 5 deposited before it
            ("deposit", {"amount": 3}, "m2"),
            ("withdraw", {"amount": 7}, "m3"),  # 8 by now: accepted
        ]
        results = await asyncio.gather(
            *(
                commands.execute_command(etcd[0], prefix, ref, WALLET, c, i, cid)
                for c, i, cid in sent
            ),
            return_exceptions=True,
        )
        assert isinstance(results[1], CommandRejected)
        assert [r.version for r in results if isinstance(r, commands.CommandResult)] == [1, 2, 3]
        snapshot = await store.load_snapshot(etcd[0], prefix, ref)
        assert snapshot is not None and (snapshot.version, snapshot.state) == (3, {"balance": 1})
        record = await etcd[0].get(
            keys.entity_command(prefix, "ns", "mixed", "uid-m", "m1").encode()
        )
        assert json.loads(record.value)["version"] == 1  # decided after m0, before m2
        with pytest.raises(CommandRejected):  # the answer to an id never changes
            await commands.execute_command(
                etcd[0], prefix, ref, WALLET, "withdraw", {"amount": 7}, "m1"
            )

    run(control_plane, scenario)
