"""The etcd journal and its fence, against the real etcd of the control plane."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from kurable.engine.journal import Record
from kurable.store.journal import EtcdConfig, Fence, Fenced, Journal, SlotTaken, connect
from kurable.testing import ControlPlane


def _record(seq: int) -> Record:
    return Record(seq, "StepCompleted", "2026-01-01T00:00:00.000Z", "s", 1, {"output": seq})


def test_only_the_fence_holder_commits_and_a_slot_is_written_once(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        a, b = Fence(etcd, prefix, ttl=5), Fence(etcd, prefix, ttl=5)
        await a.start()
        await b.start()
        journal = Journal(etcd, prefix)
        try:
            assert await a.claim("run") is None
            assert await b.claim("run") == a.id
            await journal.append("run", _record(0), a)
            with pytest.raises(SlotTaken):
                await journal.append("run", _record(0), a)
            with pytest.raises(Fenced):
                await journal.append("run", _record(1), b)

            # A's lease ends (crash or pause past the TTL): B takes over, A is refused.
            await a.stop()
            assert await b.claim("run") is None
            await journal.append("run", _record(1), b)
            with pytest.raises(Fenced):
                await journal.append("run", _record(2), a)

            records, revision = await journal.load("run")
            assert [r.data.output for r in records] == [0, 1]
            assert revision > 0
            assert await journal.forget("run") >= 2
            assert (await journal.load("run"))[0] == []
        finally:
            await b.stop()
            await etcd.close()

    asyncio.run(scenario())


def test_a_new_incarnation_of_the_same_executor_takes_over_at_once(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        old = Fence(etcd, prefix, ttl=30, executor="pod-a")
        new = Fence(etcd, prefix, ttl=30, executor="pod-a")
        other = Fence(etcd, prefix, ttl=30, executor="pod-b")
        for fence in (old, new, other):
            await fence.start()
        journal = Journal(etcd, prefix)
        try:
            assert await old.claim("run") is None
            assert await other.claim("run") == old.id  # a different pod must wait
            assert await new.claim("run") is None  # the restarted container need not
            with pytest.raises(Fenced):
                await journal.append("run", _record(0), old)
            await journal.append("run", _record(0), new)
        finally:
            for fence in (old, new, other):
                await fence.stop()
            await etcd.close()

    asyncio.run(scenario())
