"""EntityQueue: one entity's commands from one process, in arrival order, in batches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from kurable.executor.entity_queue import EntityQueue


@dataclass
class Item:
    command_id: str
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Ledger:
    """A settle function that applies each command once and remembers the batches.

    `gate`, when set, holds each batch until the test releases it."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.applied: list[str] = []
        self.gate = gate

    async def settle(self, batch: list[Item]) -> None:
        self.batches.append([item.command_id for item in batch])
        if self.gate is not None:
            await self.gate.wait()
        for item in batch:
            self.applied.append(item.command_id)
            if not item.future.done():
                item.future.set_result(len(self.applied))


def test_commands_are_settled_in_arrival_order_in_batches() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        ledger = Ledger(gate)
        queue: EntityQueue[Item] = EntityQueue(ledger.settle, max_waiting=100, max_batch=4)
        items = [Item(f"c{i}") for i in range(10)]
        for item in items:
            assert queue.put(item)
        await asyncio.sleep(0)  # the first batch is taken while the rest wait
        gate.set()
        assert await asyncio.gather(*(item.future for item in items)) == list(range(1, 11))
        assert ledger.batches == [
            ["c0", "c1", "c2", "c3"],
            ["c4", "c5", "c6", "c7"],
            ["c8", "c9"],
        ]

    asyncio.run(main())


def test_a_batch_never_holds_one_command_id_twice() -> None:
    async def main() -> None:
        ledger = Ledger()
        queue: EntityQueue[Item] = EntityQueue(ledger.settle, max_waiting=100, max_batch=10)
        items = [Item("a"), Item("b"), Item("a"), Item("c")]
        for item in items:
            queue.put(item)
        await asyncio.gather(*(item.future for item in items))
        assert ledger.batches == [["a", "b"], ["a", "c"]]

    asyncio.run(main())


def test_an_idle_queue_ends_its_task_and_tells_its_owner() -> None:
    async def main() -> None:
        idle: list[EntityQueue[Item]] = []
        ledger = Ledger()
        queue: EntityQueue[Item] = EntityQueue(
            ledger.settle, max_waiting=10, max_batch=10, on_idle=idle.append
        )
        first = Item("x")
        queue.put(first)
        assert queue.busy and idle == []
        await first.future
        await asyncio.sleep(0)
        assert not queue.busy and idle == [queue] and len(queue) == 0
        second = Item("y")
        queue.put(second)  # an owner that kept it may use it again
        assert await second.future == 2
        await asyncio.sleep(0)
        assert idle == [queue, queue]

    asyncio.run(main())


def test_a_full_queue_refuses_a_command_and_queues_nothing() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        ledger = Ledger(gate)
        queue: EntityQueue[Item] = EntityQueue(ledger.settle, max_waiting=2, max_batch=1)
        items = [Item(f"c{i}") for i in range(3)]
        assert queue.put(items[0])
        await asyncio.sleep(0)  # c0 is being settled, nothing waits
        assert queue.put(items[1]) and queue.put(items[2])
        refused = Item("c3")
        assert not queue.put(refused)
        gate.set()
        await asyncio.gather(*(item.future for item in items))
        assert ledger.applied == ["c0", "c1", "c2"] and not refused.future.done()

    asyncio.run(main())


def test_a_cancelled_waiting_sender_is_never_applied_and_the_others_are_applied_once() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        ledger = Ledger(gate)
        queue: EntityQueue[Item] = EntityQueue(ledger.settle, max_waiting=100, max_batch=1)
        items = [Item(f"c{i}") for i in range(4)]

        async def send(item: Item) -> Any:
            queue.put(item)
            return await item.future

        senders = [asyncio.create_task(send(item)) for item in items]
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # c0 is being settled; c1..c3 wait
        senders[0].cancel()  # in flight: settled once, its sender gone
        senders[2].cancel()  # waiting: dropped
        gate.set()
        results = await asyncio.gather(*senders, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert isinstance(results[2], asyncio.CancelledError)
        assert ledger.applied == ["c0", "c1", "c3"]
        assert results[1] == 2 and results[3] == 3

    asyncio.run(main())


def test_a_failing_batch_fails_only_its_own_commands() -> None:
    async def main() -> None:
        batches: list[list[str]] = []

        async def settle(batch: list[Item]) -> None:
            batches.append([item.command_id for item in batch])
            if batch[0].command_id == "bad":
                raise ConnectionError("etcd unreachable")
            for item in batch:
                item.future.set_result("ok")

        queue: EntityQueue[Item] = EntityQueue(settle, max_waiting=10, max_batch=1)
        bad, good = Item("bad"), Item("good")
        queue.put(bad)
        queue.put(good)
        with pytest.raises(ConnectionError, match="etcd unreachable"):
            await bad.future
        assert await good.future == "ok"
        assert batches == [["bad"], ["good"]]

    asyncio.run(main())


def test_cancelling_the_queue_task_cancels_every_sender_instead_of_leaving_it_hanging() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        ledger = Ledger(gate)
        idle: list[EntityQueue[Item]] = []
        queue: EntityQueue[Item] = EntityQueue(
            ledger.settle, max_waiting=10, max_batch=1, on_idle=idle.append
        )
        items = [Item("a"), Item("b")]
        for item in items:
            queue.put(item)
        await asyncio.sleep(0)
        task = queue._task
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert all(item.future.cancelled() for item in items)
        assert idle == [queue] and not queue.busy and len(queue) == 0

    asyncio.run(main())
