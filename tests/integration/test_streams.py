"""Durable streams in etcd (kurable.store.streams) and the per-template stream of run
changes, written with the journal records that change a run's phase."""

from __future__ import annotations

import asyncio
import random
import secrets

import pytest

from kurable.store import keys, streams
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, eventually, get, wait_phase, workflow


def test_a_stream_reads_in_revision_order_pages_whole_revisions_and_follows(
    control_plane: ControlPlane,
) -> None:
    prefix = f"/kurable-streams-{secrets.token_hex(4)}/s/"

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint))
        tx = etcd.transactions
        try:
            assert await streams.head(etcd, prefix) == 0
            # Key order is not stream order: "b" is written before "a".
            await etcd.put(f"{prefix}b".encode(), b'{"n": 1}')
            await etcd.put(f"{prefix}a".encode(), b'{"n": 2}')
            # One transaction, three items: one offset.
            await etcd.transaction(
                compare=[],
                success=[tx.put(f"{prefix}c{i}".encode(), b'{"n": 3}') for i in range(3)],
                failure=[],
            )
            await etcd.put(b"/kurable-streams-outside", b"{}")
            items = await streams.read(etcd, prefix, 0, 100)
            assert [i.key[len(prefix) :] for i in items] == ["b", "a", "c0", "c1", "c2"]
            assert [i.value for i in items[:2]] == [{"n": 1}, {"n": 2}]
            first, second, third = items[0].offset, items[1].offset, items[2].offset
            assert first < second < third == items[4].offset
            assert await streams.head(etcd, prefix) == third
            assert await streams.lag(etcd, prefix, first) == 4
            assert await streams.lag(etcd, prefix, third) == 0

            # A page never ends inside a revision; a revision larger than a page comes whole.
            assert [i.offset for i in await streams.read(etcd, prefix, 0, 3)] == [first, second]
            assert len(await streams.read(etcd, prefix, second, 1)) == 3

            queue: asyncio.Queue[streams.StreamItem] = asyncio.Queue()

            async def follow() -> None:
                async for item in streams.follow(etcd, prefix, second):
                    queue.put_nowait(item)

            follower = asyncio.create_task(follow())
            try:
                seen = [await asyncio.wait_for(queue.get(), 10) for _ in range(3)]
                await etcd.put(f"{prefix}d".encode(), b'{"n": 4}')
                await etcd.delete(f"{prefix}a".encode())
                # 30 s: under load a watch's creation may time out (aetcd: 10 s), and
                # follow() then watches again after a second; that too must deliver them.
                seen += [await asyncio.wait_for(queue.get(), 30) for _ in range(2)]
            finally:
                follower.cancel()
            assert [(i.key[len(prefix) :], i.deleted) for i in seen] == [
                ("c0", False),
                ("c1", False),
                ("c2", False),
                ("d", False),
                ("a", True),
            ]
            assert seen[3].value == {"n": 4} and seen[4].value is None
        finally:
            await etcd.delete_prefix(prefix.encode())
            await etcd.close()

    asyncio.run(scenario())


def test_a_cursor_reads_a_backlog_in_offset_order_in_bounded_passes(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "BUFFER", 5)
    monkeypatch.setattr(streams, "SCAN_PAGE", 3)
    prefix = f"/kurable-cursor-{secrets.token_hex(4)}/s/"
    names = [f"k{i:02d}" for i in range(30)]
    random.Random(7).shuffle(names)  # key order is not stream order
    batches = [names[:1], names[1:4], names[4:11], *([n] for n in names[11:25]), names[25:]]

    async def scenario() -> None:
        etcd = await connect(EtcdConfig(endpoints=control_plane.etcd_endpoint))
        tx = etcd.transactions
        try:
            for batch in batches:  # one revision per batch; one of 7 items, beyond BUFFER
                await etcd.transaction(
                    compare=[],
                    success=[tx.put(f"{prefix}{n}".encode(), b'{"n": 1}') for n in batch],
                    failure=[],
                )
            everything = await streams.read(etcd, prefix, 0, 1000)
            expected = sorted((i.offset, i.key) for i in everything)
            assert len(expected) == 30

            cursor = streams.Cursor(etcd, prefix)
            seen: list[streams.StreamItem] = []
            after = 0
            while True:
                page, revision = await cursor.read_page(after, 2)
                if not page:
                    break
                last = page[-1].offset
                # a page holds whole revisions: all of its last revision's items
                assert sum(1 for o, _ in expected if o == last) == sum(
                    1 for i in page if i.offset == last
                )
                seen += page
                after = last
            assert [(i.offset, i.key) for i in seen] == expected
            assert revision >= expected[-1][0]

            # What comes after the cursor's read, and a reader that goes back.
            await etcd.put(f"{prefix}later".encode(), b'{"n": 2}')
            page, _ = await cursor.read_page(after, 10)
            assert [i.key[len(prefix) :] for i in page] == ["later"]
            assert page[0].value == {"n": 2}
            page, _ = await cursor.read_page(0, 100)
            assert [(i.offset, i.key) for i in page] == expected[: len(page)]
            assert page == await streams.read(etcd, prefix, 0, len(page))

            # A reader that found the stream empty asks again from the same offset (a
            # consumer that waited for its first message): it gets what came since.
            empty = f"{prefix}empty/"
            cursor = streams.Cursor(etcd, empty)
            assert await cursor.read_page(0, 10) == ([], cursor._revision)
            await etcd.put(f"{prefix}unrelated".encode(), b"{}")  # the revision moves on
            assert (await cursor.read_page(0, 10))[0] == []
            await etcd.put(f"{empty}first".encode(), b'{"n": 3}')
            page, _ = await cursor.read_page(0, 10)
            assert [(i.key[len(empty) :], i.value) for i in page] == [("first", {"n": 3})]
        finally:
            await etcd.delete_prefix(prefix.encode())
            await etcd.close()

    asyncio.run(scenario())


def _changes(cp: ControlPlane, namespace: str, template: str) -> list[dict]:
    async def read() -> list[dict]:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint))
        try:
            prefix = keys.template_changes(keys.DEFAULT_PREFIX, namespace, template)
            return [i.value or {} for i in await streams.read(etcd, prefix, 0, 100)]
        finally:
            await etcd.close()

    return asyncio.run(read())


def test_a_run_s_phase_changes_go_to_its_template_stream_and_go_with_the_run(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    run = workflow("changes", steps=[{"name": "s", "set": {"x": "${ 1 + 1 }"}}])
    run["metadata"]["labels"] = {"team": "a"}
    apply(control_plane, namespace, run)
    wait_phase(control_plane, namespace, "changes", ("Succeeded",))
    uid = get(control_plane, namespace, "workflow/changes")["metadata"]["uid"]
    changes = eventually(
        lambda: _changes(control_plane, namespace, "-"),
        lambda found: len(found) == 2,
        what="two run changes",
    )
    assert [c["run"]["phase"] for c in changes] == ["Running", "Succeeded"]
    assert changes[1]["run"]["uid"] == uid and changes[1]["run"]["labels"] == {"team": "a"}
    assert changes[1]["vars"] == {"x": 2} and changes[1]["run"]["template"] is None

    control_plane.kubectl("delete", "-n", namespace, "workflow/changes")
    eventually(
        lambda: _changes(control_plane, namespace, "-"),
        lambda found: found == [],
        what="the run's changes to go with it",
    )
