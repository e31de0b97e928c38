"""One task per driven object in this process, whoever asked first.

Anything the operator drives as a long-lived loop (a run today; consumers and schedules
later) is started either by kopf's daemon for its object or by resync, which adopts the
objects kopf's watch did not deliver. `Drivers` keeps at most one task per object uid:
a daemon asking for an object resync adopted takes that task over, with kopf's live
body, instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .actions.outcome import RunRef

Logger = logging.Logger | logging.LoggerAdapter[Any]


class Driven(Protocol):
    """What a driver drives: a loop over one object, told when kopf takes it over."""

    async def drive(self) -> None:
        """Drive the object to its end (or until cancelled)."""

    def take_over(self, body: Mapping[str, Any], logger: Logger) -> None:
        """kopf's daemon took this adopted object over: from now on, its live body."""

    def close(self) -> None:
        """Release what the object subscribed to; called once its task has ended."""


D = TypeVar("D", bound=Driven)


@dataclass
class Driver(Generic[D]):
    """The task that drives one object in this process."""

    driven: D
    task: asyncio.Task[None]
    daemon: bool
    """Whether kopf's daemon owns it (else resync adopted it and may stop it)."""


class Drivers(Generic[D]):
    """The objects this process drives: one task per object at most.

    `make(body, ref, logger)` makes the driven loop of one object; `kind` names the
    tasks (`run ns/name`) for debugging.
    """

    def __init__(
        self, make: Callable[[Mapping[str, Any], RunRef, Logger], D], kind: str = "object"
    ) -> None:
        self._make = make
        self._kind = kind
        self._by_uid: dict[str, Driver[D]] = {}

    def drive(
        self, body: Mapping[str, Any], ref: RunRef, logger: Logger, daemon: bool
    ) -> Driver[D]:
        """The task driving object `ref`, started now unless one runs already. A daemon
        asking for an object that resync adopted takes it over, with kopf's live body."""
        driver = self._by_uid.get(ref.uid)
        if driver is not None and not driver.task.done():
            if daemon and not driver.daemon:
                driver.daemon = True
                driver.driven.take_over(body, logger)
                logger.info(f"took over the {self._kind} adopted by resync")
            return driver
        driven = self._make(body, ref, logger)
        driver = Driver(
            driven,
            asyncio.create_task(
                self._drive(driven), name=f"{self._kind} {ref.namespace}/{ref.name}"
            ),
            daemon,
        )
        self._by_uid[ref.uid] = driver
        driver.task.add_done_callback(lambda _: self._forget(ref.uid, driver))
        return driver

    async def _drive(self, driven: D) -> None:
        try:
            await driven.drive()
        finally:
            driven.close()

    def _forget(self, uid: str, driver: Driver[D]) -> None:
        if self._by_uid.get(uid) is driver:
            del self._by_uid[uid]

    def get(self, uid: str) -> Driver[D] | None:
        """The live driver of object `uid`, if any."""
        driver = self._by_uid.get(uid)
        return driver if driver is not None and not driver.task.done() else None

    def uids(self) -> set[str]:
        """The objects driven now."""
        return {uid for uid, d in self._by_uid.items() if not d.task.done()}

    def adopted(self) -> set[str]:
        """The objects driven now without a kopf daemon."""
        return {uid for uid, d in self._by_uid.items() if not d.task.done() and not d.daemon}

    async def stop(self, uid: str) -> None:
        """Stop driving object `uid` (and wait until its task has cleaned up)."""
        driver = self._by_uid.get(uid)
        if driver is not None and not driver.task.done():
            driver.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await driver.task

    async def stop_all(self) -> None:
        """Stop every object (at shutdown)."""
        for uid in list(self._by_uid):
            await self.stop(uid)
