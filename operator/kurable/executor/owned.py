"""One task per owned object in this process: the drivers of Schedules and Consumers.

A replica drives only the objects it `owns(uid)` (kurable.executor.shards) and lets go of
the others when the members change (`disown`). A subclass names its driver (`_make`: a
driver with `drive()` and `close()`) and what it drives (`_label`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .actions import RunRef
from .drivers import Logger
from .runtime import Runtime


class Driver(Protocol):
    async def drive(self) -> None: ...

    def close(self) -> None: ...


class OwnedDrivers:
    _label = "object"

    def __init__(self, runtime: Runtime, owns: Callable[[str], bool] = lambda uid: True) -> None:
        self.runtime = runtime
        self.owns = owns
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _make(self, body: Mapping[str, Any], ref: RunRef, logger: Logger) -> Driver:
        raise NotImplementedError

    def drive(
        self, body: Mapping[str, Any], ref: RunRef, logger: Logger
    ) -> asyncio.Task[None] | None:
        """The task driving `ref`, started now unless one runs already (None: this process
        does not own it)."""
        task = self._tasks.get(ref.uid)
        if task is not None and not task.done():
            return task
        if not self.owns(ref.uid):
            return None
        driver = self._make(body, ref, logger)
        name = f"{self._label} {ref.namespace}/{ref.name}"
        task = asyncio.create_task(self._drive(driver), name=name)
        self._tasks[ref.uid] = task
        task.add_done_callback(lambda done: self._forget(ref.uid, done))
        return task

    @staticmethod
    async def _drive(driver: Driver) -> None:
        try:
            await driver.drive()
        finally:
            driver.close()

    def _forget(self, uid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(uid) is task:
            del self._tasks[uid]

    async def stop(self, uid: str) -> None:
        """Stop driving `uid` (and wait until its task has cleaned up)."""
        task = self._tasks.get(uid)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def disown(self) -> int:
        """Stop driving what this process no longer owns; return how many."""
        gone = [uid for uid, task in self._tasks.items() if not task.done() and not self.owns(uid)]
        for uid in gone:
            await self.stop(uid)
        return len(gone)

    async def stop_all(self) -> None:
        """Stop every driver (at shutdown)."""
        for uid in list(self._tasks):
            await self.stop(uid)
