"""The etcd journal and its fence, against the real etcd of the control plane."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from kurable.engine import sizes
from kurable.engine.journal import Record
from kurable.store import keys
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


def test_a_record_larger_than_one_etcd_request_is_stored_in_chunks_and_read_back_whole(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"
    # 2 MiB: over etcd's default --max-request-bytes (1.5 MiB) as one put.
    big = {"blob": "é" * (1024 * 1024)}
    small = {"blob": "x" * 100}

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        fence = Fence(etcd, prefix, ttl=5)
        await fence.start()
        journal = Journal(etcd, prefix)
        try:
            assert await fence.claim("run") is None
            await journal.append(
                "run",
                Record(0, "StepCompleted", "2026-01-01T00:00:00Z", "s", 1, {"output": big}),
                fence,
            )
            await journal.append(
                "run",
                Record(1, "StepCompleted", "2026-01-01T00:00:00Z", "t", 1, {"output": small}),
                fence,
            )
            records, _ = await journal.load("run")
            assert [r.data.output for r in records] == [big, small]

            chunk_prefix = f"{keys.workflow(prefix, 'run')}chunks/"
            listed = await etcd.get_prefix(chunk_prefix.encode(), keys_only=True)
            pieces = [(await etcd.get(kv.key)).value for kv in listed]
            assert len(pieces) == -(-len(b"".join(pieces)) // sizes.CHUNK_BYTES) >= 8
            assert max(len(p) for p in pieces) <= sizes.CHUNK_BYTES
            slot = await etcd.get(keys.journal_record(prefix, "run", 0).encode())
            assert slot is not None and len(slot.value) < 200  # a reference, not the record

            # A commit that loses its slot leaves its chunks unreferenced; forget removes them.
            with pytest.raises(SlotTaken):
                await journal.append(
                    "run",
                    Record(1, "StepCompleted", "2026-01-01T00:00:00Z", "t", 1, {"output": big}),
                    fence,
                )
            assert [r.data.output for r in (await journal.load("run"))[0]] == [big, small]
            await journal.forget("run")
            left = await etcd.get_prefix(keys.workflow(prefix, "run").encode(), keys_only=True)
            assert list(left) == []
        finally:
            await fence.stop()
            await etcd.close()

    asyncio.run(scenario())
