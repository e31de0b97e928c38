"""One entity's commands from this process, in arrival order, settled in batches by one task.

Concurrent senders in one process to one entity do not race each other's etcd
transactions: each puts its command at the end of the entity's `EntityQueue` and awaits
the command's future; the queue's task hands the oldest commands, as a batch, to a
`settle` function (kurable.executor.commands: decide each on the state the previous left,
commit them in one transaction) and then the next ones. The task ends, and `on_idle` lets
the owner forget the queue, when it runs empty, so a process keeps no queue per entity it
ever saw.

Cancelling a sender cancels its future: a command still waiting is dropped without being
handed to `settle`; one already handed over is settled at most once (`settle` skips or
ignores futures that are done).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["EntityQueue", "Queued"]


class Queued(Protocol):
    """What a queue holds: a command id and the future its sender awaits."""

    @property
    def command_id(self) -> str: ...

    @property
    def future(self) -> asyncio.Future[Any]: ...


Q = TypeVar("Q", bound=Queued)


class EntityQueue(Generic[Q]):
    """Commands to one entity, handed to `settle` oldest first, `max_batch` at most at once.

    `settle(batch)` must settle (or leave to cancellation) each future of `batch`; an
    exception it raises fails every future of the batch still pending, and the queue goes
    on with the next batch. A batch never holds one command id twice: the second send of an
    id waits for the next batch, where it finds the first one's record. `on_idle()` is
    called when the queue has run empty and its task ended; `put` after that starts a new
    task, but an owner forgets an idle queue and makes a new one.
    """

    def __init__(
        self,
        settle: Callable[[list[Q]], Awaitable[None]],
        *,
        max_waiting: int,
        max_batch: int,
        on_idle: Callable[[EntityQueue[Q]], None] = lambda queue: None,
        name: str = "kurable-entity-queue",
    ) -> None:
        self._settle = settle
        self._max_waiting = max_waiting
        self._max_batch = max_batch
        self._on_idle = on_idle
        self._name = name
        self._waiting: collections.deque[Q] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Commands waiting (not counting the batch being settled)."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        """Whether the queue's task runs (a batch is being settled or commands wait)."""
        return self._task is not None

    def put(self, item: Q) -> bool:
        """Queue `item` at the end; False (nothing queued) when `max_waiting` already wait."""
        if len(self._waiting) >= self._max_waiting:
            return False
        self._waiting.append(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        return True

    def _take(self) -> list[Q]:
        """The oldest waiting commands whose senders still wait, at most `max_batch`,
        stopping before an id already taken."""
        batch: list[Q] = []
        ids: set[str] = set()
        while self._waiting and len(batch) < self._max_batch:
            item = self._waiting[0]
            if item.future.done():  # its sender was cancelled: never applied
                self._waiting.popleft()
                continue
            if item.command_id in ids:
                break
            ids.add(item.command_id)
            batch.append(self._waiting.popleft())
        return batch

    async def _run(self) -> None:
        batch: list[Q] = []
        try:
            while batch := self._take():
                try:
                    await self._settle(batch)
                except Exception as e:  # etcd unreachable, a bug: fail this batch only
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(e)
        finally:
            # Senders still waiting here only when this task was cancelled (the loop is
            # closing): they are cancelled too, none is left hanging.
            for item in [*batch, *self._waiting]:
                item.future.cancel()
            self._waiting.clear()
            # No await between the last _take() and here: a later put() starts afresh.
            self._task = None
            self._on_idle(self)
