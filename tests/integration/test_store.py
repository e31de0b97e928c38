"""The etcd journal and its fence, against the real etcd of the control plane."""

from __future__ import annotations

import asyncio
import secrets

import aetcd.exceptions
import pytest
from aetcd import rpc

from kurable.engine import sizes
from kurable.engine.journal import Record
from kurable.store import keys
from kurable.store.etcd import TxnBatcher, request_op
from kurable.store.journal import (
    LOAD_BATCH,
    EtcdConfig,
    Fence,
    Fenced,
    Journal,
    SlotTaken,
    connect,
)
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
        longer = Fence(etcd, prefix, ttl=30, executor="pod-a0")  # pod-a's name and more
        journal = Journal(etcd, prefix)
        try:
            await old.start()
            await other.start()
            await longer.start()
            assert await old.claim("run") is None
            assert await longer.claim("theirs") is None
            assert await other.claim("run") == old.id  # a different pod must wait
            await new.start()  # the container restarted: its key names the new incarnation
            assert await new.claim("run") is None  # the restarted container need not
            assert await new.claim("run") is None  # and holds it
            assert await new.claim("theirs") == longer.id  # another pod's, however named
            with pytest.raises(Fenced):
                await journal.append("run", _record(0), old)
            await journal.append("run", _record(0), new)
        finally:
            for fence in (old, new, other, longer):
                await fence.stop()
            await etcd.close()

    asyncio.run(scenario())


def test_claims_made_together_share_transactions_and_each_gets_its_own_answer(
    control_plane: ControlPlane,
) -> None:
    """A restart claims thousands of runs at once: they go in a few transactions, each
    claim decided on its own (taken, already this executor's, another live one's), and
    two claims of one run never share a transaction (etcd refuses a key written twice)."""
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        old = Fence(etcd, prefix, ttl=30, executor="pod-a")
        new = Fence(etcd, prefix, ttl=30, executor="pod-a")
        other = Fence(etcd, prefix, ttl=30, executor="pod-b")
        try:
            for fence in (old, other):
                await fence.start()
            runs = [f"run-{i}" for i in range(100)]
            assert await asyncio.gather(*(old.claim(r) for r in runs[:60])) == [None] * 60
            assert await other.claim("theirs") is None
            await new.start()  # a restart: the old incarnation's runs are taken over
            before = new.claims.transactions
            answers = await asyncio.gather(*(new.claim(r) for r in [*runs, *runs[:10], "theirs"]))
            assert answers == [None] * 110 + [other.id]
            # 111 claims (10 runs twice): the first alone, the rest as they queued behind
            # it, 32 at most per transaction and never one run twice in one.
            assert new.claims.transactions - before <= 6
            for run in runs:
                found = await etcd.get(keys.owner(prefix, run).encode())
                assert found is not None and found.value.decode() == new.id
        finally:
            for fence in (old, new, other):
                await fence.stop()
            await etcd.close()

    asyncio.run(scenario())


def test_an_operation_etcd_refuses_fails_alone_and_the_others_of_its_batch_go_on(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        fence = Fence(etcd, prefix, ttl=30, executor="pod-a")
        try:
            await fence.start()
            tx = etcd.transactions
            big = b"x" * (2 * 1024 * 1024)  # over etcd's request limit: the txn is refused
            sent = fence.claims.transactions
            refused, *claimed = await asyncio.gather(
                fence.claims.submit(b"k", request_op(etcd, tx.put(b"k", big))),
                *(fence.claim(f"run-{i}") for i in range(3)),
                return_exceptions=True,
            )
            assert isinstance(refused, aetcd.exceptions.ClientError), refused
            assert claimed == [None] * 3
            # Together (refused), then one at a time.
            assert fence.claims.transactions - sent == 1 + 4
            assert await etcd.get(b"k") is None
        finally:
            await fence.stop()
            await etcd.close()

    asyncio.run(scenario())


async def test_a_batcher_whose_sender_was_cancelled_before_it_ran_starts_another(
    control_plane: ControlPlane,
) -> None:
    etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint))
    batcher = TxnBatcher(etcd, read_only=True)
    op = rpc.RequestOp(request_range=rpc.RangeRequest(key=b"/nothing-here", limit=1))
    try:
        first = asyncio.ensure_future(batcher.submit(None, op))
        await asyncio.sleep(0)  # `first` queued its op and made the sender task ...
        assert batcher._sender is not None
        batcher._sender.cancel()  # ... cancelled before its first step (a loop sweep)
        with pytest.raises(asyncio.CancelledError):
            await first
        answer, revision = await asyncio.wait_for(batcher.submit(None, op), 10)
        assert answer.response_range.count == 0 and revision > 0
    finally:
        await etcd.close()


def test_journals_read_together_share_transactions_and_come_back_whole(
    control_plane: ControlPlane,
) -> None:
    """A restart reads thousands of journals: their first pages go together, up to
    READ_BATCH per transaction, and the answer may be far over gRPC's default 4 MiB."""
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"
    blob = "x" * (200 * 1024)  # under CHUNK_BYTES: stored whole

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        fence = Fence(etcd, prefix, ttl=30)
        await fence.start()
        journal = Journal(etcd, prefix)
        runs = {f"run-{i}": LOAD_BATCH + 2 if i % 2 else 3 for i in range(20)}
        try:
            for run, length in runs.items():
                assert await fence.claim(run) is None
                for seq in range(length):
                    output = {"run": run, "seq": seq, "blob": blob}
                    record = Record(
                        seq, "StepCompleted", "2026-01-01T00:00:00Z", "s", 1, {"output": output}
                    )
                    await journal.append(run, record, fence)
            before = journal.reads.transactions
            answers = await asyncio.gather(*(journal.read(run) for run in runs))
            # 20 first pages, asked for together, 16 at most per transaction (the longer
            # journals' second pages are read alone, at the first page's revision).
            assert journal.reads.transactions - before == 2
            for (run, length), (records, read_at, last) in zip(runs.items(), answers, strict=True):
                assert [(r.data.output["run"], r.data.output["seq"]) for r in records] == [
                    (run, seq) for seq in range(length)
                ]
                assert records[0].data.output["blob"] == blob
                assert read_at >= last > 0
        finally:
            await fence.stop()
            await etcd.close()

    asyncio.run(scenario())


def test_a_lost_lease_fences_commits_and_its_grant_again_brings_every_hold_back(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        fence = Fence(etcd, prefix, ttl=30, executor="pod-a")
        other = Fence(etcd, prefix, ttl=30, executor="pod-b")
        await fence.start()
        await other.start()
        journal = Journal(etcd, prefix)
        try:
            runs = [f"run-{n}" for n in range(20)]
            for run in runs:
                assert await fence.claim(run) is None
            owners_before = [(await etcd.get(keys.owner(prefix, r).encode())).value for r in runs]

            # The lease ends behind the fence's back (as when the process was paused
            # past its TTL): its executor key goes, and with it every commit's right.
            live = await etcd.get(keys.executor(prefix, "pod-a").encode())
            await etcd.revoke_lease(live.lease)
            with pytest.raises(Fenced, match="lease"):
                await journal.append(runs[0], _record(0), fence)
            # Meanwhile another executor may take a run over: the holder looks dead.
            assert await other.claim(runs[-1]) is None

            # The keeper grants a new lease within one renewal interval (30/5 s) and puts
            # the executor key back: the holds are back without any per-run claim.
            for _ in range(200):
                if fence.grants >= 2 and fence.alive.is_set():
                    break
                await asyncio.sleep(0.1)
            assert fence.grants == 2
            for run in runs[:-1]:
                assert await fence.holder(run) == fence.id
                await journal.append(run, _record(0), fence)
            with pytest.raises(Fenced):  # the run taken over stays taken
                await journal.append(runs[-1], _record(0), fence)
            owners_after = [(await etcd.get(keys.owner(prefix, r).encode())).value for r in runs]
            assert owners_after[:-1] == owners_before[:-1]
        finally:
            await fence.stop()
            await other.stop()
            await etcd.close()

    asyncio.run(scenario())


def test_a_run_handed_over_is_held_by_the_new_owner_at_once(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        a = Fence(etcd, prefix, ttl=30, executor="pod-a")
        b = Fence(etcd, prefix, ttl=30, executor="pod-b")
        await a.start()
        await b.start()
        journal = Journal(etcd, prefix)
        try:
            assert await a.claim("run") is None
            await journal.append("run", _record(0), a)
            await a.release("run", to="pod-b")
            assert await b.holder("run") == b.id
            await journal.append("run", _record(1), b)  # no claim needed
            with pytest.raises(Fenced):
                await journal.append("run", _record(2), a)
            await b.release("run", to="pod-gone")  # no such executor: to nobody
            assert await a.holder("run") is None
        finally:
            await a.stop()
            await b.stop()
            await etcd.close()

    asyncio.run(scenario())


def test_a_previous_versions_owner_key_is_respected_until_its_lease_expires(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        fence = Fence(etcd, prefix, ttl=30, executor="pod-new")
        await fence.start()
        try:
            # The old layout: executors/<id> and the owner key, both on the old lease.
            old_id = "pod-old/1234abcd"
            lease = await etcd.lease(30)
            await etcd.put(keys.executor(prefix, old_id).encode(), b"alive", lease=lease)
            await etcd.put(keys.owner(prefix, "run").encode(), old_id.encode(), lease=lease)
            assert await fence.claim("run") == old_id
            assert await fence.holder("run") == old_id
            await lease.revoke()  # the old version stopped (or its lease expired)
            assert await fence.holder("run") is None
            assert await fence.claim("run") is None
        finally:
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


def test_records_commit_together_as_far_as_one_request_holds_them_and_all_or_none(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-store-{secrets.token_hex(4)}/"

    def big(seq: int) -> Record:
        return Record(
            seq, "StepCompleted", "2026-01-01T00:00:00.000Z", "s", 1, {"output": "x" * 700}
        )

    async def revisions(journal: Journal) -> list[int]:
        listing = await journal.client.get_prefix(keys.journal(prefix, "run").encode())
        return [int(kv.mod_revision) for kv in listing]

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint, prefix=prefix))
        fence = Fence(etcd, prefix, ttl=5)
        await fence.start()
        try:
            assert await fence.claim("run") is None
            journal = Journal(etcd, prefix, chunk_bytes=1000)
            # Three small records: one transaction.
            count, revision = await journal.append_all(
                "run", [(_record(i), None) for i in range(3)], fence
            )
            assert count == 3
            assert await revisions(journal) == [revision] * 3
            # Two records of 700 bytes do not fit in 1000 together: the first goes alone.
            count, _ = await journal.append_all("run", [(big(3), None), (big(4), None)], fence)
            assert count == 1
            # A taken slot: nothing of the batch is written.
            with pytest.raises(SlotTaken):
                await journal.append_all("run", [(_record(4), None), (_record(3), None)], fence)
            records, _ = await journal.load("run")
            assert [r.seq for r in records] == [0, 1, 2, 3]
        finally:
            await fence.stop()
            await etcd.close()

    asyncio.run(scenario())
