"""The runs this process drives: a task for each run that is acting, nothing more for
one that waits.

Runs are driven from kopf's watch events (kurable.handlers.workflow, no daemon and no
finalizer per run) and from resync, which delivers what the watch missed. Whoever asks,
a run has one task in this process at most, and only while it acts: a run whose next
step waits for a signal, a timer or a change of its spec returns from its task and is
*parked* (Akka's passivation): a small record (its uid, when to wake it, what of its
object it decided on) in one table, its time in one heap for the whole process. It is
driven again when that time comes, when its object changes in a way that may unblock
it (kurable.engine.passive), or when a child of it changes. A finished run costs no
task and no timer; a finished run with `ttlSecondsAfterFinished` costs one heap entry.

`Drivers.start` is the one place where this process decides to start driving a run:
`owns(uid)` (default: every run) is consulted there, so that a process sharing the runs
with others drives only its share; `Drivers.disown` lets go of the runs it no longer
owns when the membership changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from kurable.engine.journal import TERMINAL_PHASES
from kurable.engine.passive import Timers, expiry_time, wake_fingerprint

from .actions.outcome import RunRef

Logger = logging.Logger | logging.LoggerAdapter[Any]

log = logging.getLogger("kurable.drivers")

FINISHED_MEMORY = 100_000
"""Runs that finished in this process remembered (by uid, ~100 bytes each), so that the
late echo of one of their earlier status patches (a phase not yet terminal) does not
drive them again."""


@dataclass(frozen=True)
class Parked:
    """A run that waits with no task: what brings it back."""

    ref: RunRef
    until: float | None
    """Epoch seconds to drive it again at; None: only when its object changes."""
    fingerprint: int
    """`wake_fingerprint` of the object it decided on: a change to it may unblock it."""


class Driven(Protocol):
    """One run's loop, as the drivers see it."""

    ref: RunRef

    @property
    def body(self) -> Mapping[str, Any] | None:
        """The object as last observed (None: not read yet)."""

    @property
    def finished(self) -> bool:
        """Whether its journal says it finished."""

    @property
    def finished_at(self) -> str | None:
        """When it finished (RFC 3339), if it did."""

    async def drive(self) -> Parked | None:
        """Drive the run until it finishes (None) or waits with nothing to do (Parked)."""

    def observe(self, body: Mapping[str, Any]) -> None:
        """The watch delivered a newer copy of the object: use it, and decide again."""

    def refresh(self, listed: Mapping[str, Any], body_version: str) -> None:
        """Resync listed the object; `body_version`: the body's version before the listing."""

    def close(self) -> None:
        """Release what the run subscribed to; called once its task has ended."""


MakeRun = Callable[[Mapping[str, Any] | None, RunRef, Logger], Driven]
"""Makes the loop of one run from its object (None: read it first)."""


@dataclass
class Driver:
    """The task that drives one run in this process."""

    driven: Driven
    task: asyncio.Task[Parked | None]


class Drivers:
    """The runs this process drives (one task each while acting) and the ones it parked.

    `make(body, ref, logger)` makes the loop of one run; `expire(ref)` deletes a
    finished run whose `ttlSecondsAfterFinished` is up; `wake(uid)` wakes the waiters
    of a run inside its task (kurable.executor.runtime); `owns(uid)` says whether this
    process drives run `uid` (default: all). `clock` gives epoch seconds.
    """

    def __init__(
        self,
        make: MakeRun,
        expire: Callable[[RunRef], Awaitable[None]],
        wake: Callable[[str], None],
        release: Callable[[str], Awaitable[None]] | None = None,
        owns: Callable[[str], bool] = lambda uid: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._make = make
        self._expire = expire
        self._wake_inside = wake
        self._release = release
        self.owns = owns
        """Whether this process drives run `uid`; consulted only in `start`."""
        self._clock = clock
        self._active: dict[str, Driver] = {}
        self._parked: dict[str, Parked] = {}
        self._wakes = Timers()
        self._expiries = Timers()
        self._expiring: dict[str, RunRef] = {}
        self._finished: dict[str, None] = {}
        self._timers_changed = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._deleting: set[asyncio.Task[None]] = set()
        self.woken = 0
        """Parked runs driven again (by a change, a timer or a child)."""

    @property
    def held(self) -> int:
        """Runs this process holds now: acting (a task each) or parked."""
        return len(self._active) + len(self._parked)

    # -- the one place a run starts being driven ----------------------------------------

    def start(
        self, body: Mapping[str, Any] | None, ref: RunRef, logger: Logger | None = None
    ) -> Driver | None:
        """Drive run `ref` now, from `body` (None: read it first), unless a task drives it
        already (that one is returned) or this process does not own it (None)."""
        driver = self._active.get(ref.uid)
        if driver is not None:
            if body is not None:
                driver.driven.observe(body)
            return driver
        if not self.owns(ref.uid):
            return None
        if self._parked.pop(ref.uid, None) is not None:
            self._wakes.discard(ref.uid)
            self.woken += 1
        driven = self._make(body, ref, logger or object_logger(ref))
        task = asyncio.create_task(
            self._drive(ref.uid, driven), name=f"run {ref.namespace}/{ref.name}"
        )
        driver = Driver(driven, task)
        self._active[ref.uid] = driver
        task.add_done_callback(lambda _: self._drop(ref.uid, driver))
        return driver

    def _drop(self, uid: str, driver: Driver) -> None:
        """A task cancelled before it began never ran `_drive`'s cleanup."""
        if self._active.get(uid) is driver:
            del self._active[uid]
            driver.driven.close()

    async def _drive(self, uid: str, driven: Driven) -> Parked | None:
        parked: Parked | None = None
        try:
            parked = await driven.drive()
            return parked
        finally:
            driven.close()
            # No await from the run's last look at its wake-ups to here: a change
            # observed meanwhile found the task active and woke it inside.
            driver = self._active.get(uid)
            if driver is not None and driver.driven is driven:
                del self._active[uid]
                if parked is not None:
                    self._park(parked)
                elif driven.finished:
                    self._remember_finished(uid)
                    body = driven.body
                    if body is not None:
                        self._schedule_expiry(body, driven.ref, driven.finished_at)

    def _park(self, parked: Parked) -> None:
        self._parked[parked.ref.uid] = parked
        if parked.until is not None:
            self._set_timer(self._wakes, parked.ref.uid, parked.until)

    def _remember_finished(self, uid: str) -> None:
        self._finished[uid] = None
        if len(self._finished) > FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]

    # -- what the watch and resync deliver ----------------------------------------------

    async def observe(self, body: Mapping[str, Any], ref: RunRef, logger: Logger) -> None:
        """kopf's watch delivered run `ref` (not its deletion): drive it if this may move
        it on; schedule its deletion when it finished with `ttlSecondsAfterFinished`."""
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        if meta.get("deletionTimestamp"):
            await self.stop(ref.uid)  # its journal goes with the DELETED event
            return
        driver = self._active.get(ref.uid)
        if driver is not None:
            driver.driven.observe(body)
            self._wake_inside(ref.uid)
            return
        if status.get("phase") in TERMINAL_PHASES:
            # Status is projected from the journal: a terminal phase, a finished journal.
            self._parked.pop(ref.uid, None)
            self._wakes.discard(ref.uid)
            self._schedule_expiry(body, ref, status.get("finishedAt"))
            return
        if ref.uid in self._finished:
            return  # the echo of an earlier status patch of a run finished here
        parked = self._parked.get(ref.uid)
        if parked is not None and parked.fingerprint == wake_fingerprint(body):
            return  # e.g. the echo of its own status patch: nothing that unblocks it
        self.start(body, ref, logger)

    def refresh(self, listed: Mapping[str, Any], ref: RunRef, body_version: str) -> None:
        """Resync listed run `ref`: hand the listing to its task, or wake it if parked
        and the listing shows a change the watch did not deliver."""
        driver = self._active.get(ref.uid)
        if driver is not None:
            driver.driven.refresh(listed, body_version)
            return
        parked = self._parked.get(ref.uid)
        if parked is not None and parked.fingerprint != wake_fingerprint(listed):
            self.start(listed, ref)

    def wake(self, uid: str) -> None:
        """Run `uid` or a child of it changed: wake its task, or drive it if parked."""
        self._wake_inside(uid)
        parked = self._parked.get(uid)
        if parked is not None and uid not in self._active:
            self.start(None, parked.ref)

    async def forget(self, uid: str) -> None:
        """Run `uid` is gone: stop driving it and forget every timer of it."""
        await self.stop(uid)
        self._parked.pop(uid, None)
        self._wakes.discard(uid)
        self._expiries.discard(uid)
        self._expiring.pop(uid, None)
        self._finished.pop(uid, None)

    # -- timers -------------------------------------------------------------------------

    def _schedule_expiry(
        self, body: Mapping[str, Any], ref: RunRef, finished_at: str | None
    ) -> None:
        at = expiry_time((body.get("spec") or {}).get("ttlSecondsAfterFinished"), finished_at)
        if at is None or ref.uid in self._expiries:
            return
        self._expiring[ref.uid] = ref
        self._set_timer(self._expiries, ref.uid, at)

    def _set_timer(self, timers: Timers, uid: str, at: float) -> None:
        earliest = timers.next_at()
        timers.set(uid, at)
        if self._timer_task is None or self._timer_task.done():
            # A context of its own: runs it wakes post their Events directly, never
            # through the handler context that happened to set the first timer.
            self._timer_task = asyncio.create_task(
                self._timers(), name="kurable-run-timers", context=contextvars.Context()
            )
        elif earliest is None or at < earliest:
            self._timers_changed.set()

    async def _timers(self) -> None:
        while True:
            self._timers_changed.clear()
            now = self._clock()
            for uid in self._wakes.due(now):
                parked = self._parked.get(uid)
                if parked is not None and uid not in self._active:
                    self.start(None, parked.ref)
            for uid in self._expiries.due(now):
                ref = self._expiring.pop(uid, None)
                if ref is not None:
                    task = asyncio.create_task(self._delete(ref))
                    self._deleting.add(task)
                    task.add_done_callback(self._deleting.discard)
            times = [t for t in (self._wakes.next_at(), self._expiries.next_at()) if t is not None]
            timeout = max(0.0, min(times) - self._clock()) if times else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timers_changed.wait(), timeout)

    async def _delete(self, ref: RunRef) -> None:
        try:
            await self._expire(ref)
        except Exception as e:  # the next observation of the run schedules it again
            log.warning("[%s/%s] could not delete the expired run: %s", ref.namespace, ref.name, e)

    # -- looking ------------------------------------------------------------------------

    def get(self, uid: str) -> Driver | None:
        """The task driving run `uid` now, if any."""
        return self._active.get(uid)

    def parked(self, uid: str) -> Parked | None:
        """Run `uid`'s record if it is parked here."""
        return self._parked.get(uid)

    def active(self) -> set[str]:
        """The runs a task drives now."""
        return set(self._active)

    def uids(self) -> set[str]:
        """The runs this process is responsible for now: driven by a task or parked."""
        return set(self._active) | set(self._parked)

    def report(self) -> dict[str, int]:
        """Figures for the liveness endpoint: runs `driven` by a task, `passive` (parked),
        `timers` (parked runs with a time to wake), `expiries` (finished runs to delete)."""
        return {
            "driven": len(self._active),
            "passive": len(self._parked),
            "timers": len(self._wakes),
            "expiries": len(self._expiries),
            "woken": self.woken,
        }

    # -- stopping -----------------------------------------------------------------------

    async def disown(self) -> list[str]:
        """Who owns which run changed: stop the runs `owns` no longer admits, driven or
        parked (a parked run's hold is released), so that their new owner takes them.
        Returns their uids. Runs this process now owns come from the watch's next
        events and from resync."""
        gone = [uid for uid in self.uids() if not self.owns(uid)]
        for uid in gone:
            await self.stop(uid)
            if self._parked.pop(uid, None) is not None:
                self._wakes.discard(uid)
                if self._release is not None:
                    with contextlib.suppress(Exception):
                        await self._release(uid)
        return gone

    async def stop(self, uid: str) -> None:
        """Stop driving run `uid` (and wait until its task has cleaned up)."""
        driver = self._active.get(uid)
        if driver is not None and not driver.task.done():
            driver.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await driver.task

    async def stop_all(self) -> None:
        """Stop every run and the timers (at shutdown)."""
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        for uid in list(self._active):
            await self.stop(uid)


class _ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """`[namespace/name] message`, like kopf's per-object loggers."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{(self.extra or {}).get('ref')}] {msg}", kwargs


def object_logger(ref: RunRef) -> Logger:
    """A logger for run `ref` outside kopf's handlers (resync, timers)."""
    return _ObjectLogger(logging.getLogger("kurable.runs"), {"ref": f"{ref.namespace}/{ref.name}"})
