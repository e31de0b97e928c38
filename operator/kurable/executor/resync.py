"""Resync: list the Workflows every few seconds, so that runs keep moving when kopf's
watch goes silent, and say so loudly when it does.

A watch stream can go silent without closing (a half-dead TCP connection, a frozen
proxy). kopf then delivers nothing: a waiting run never sees its signal, and a new
Workflow is never driven. Every `--resync-interval` seconds the operator lists the
Workflows of the namespaces it serves and

- hands each run it drives or parks the object as listed, so that a signal or a spec
  flag the watch did not deliver still reaches the run (`Drivers.refresh`);
- adopts each unfinished run that this replica owns (`Shards.owns`), that this process
  neither drives nor parks and no live executor holds in etcd, and drives it
  (`Drivers.start`); the watch's later events reach the same task (and when the
  replicas change, `take_owned` starts the runs this one owns now at once);
- stops driving a run whose object is gone or being deleted, and forgets the journal
  of one that is gone (its DELETED event was missed);
- once, on its first listing, forgets the journals of runs deleted while no operator
  watched (`sweep`), so a restart needs no finalizer on any run;
- compares the listing with what the watch delivered: when the watch missed something,
  it logs an ERROR and the liveness probe fails (`/healthz` answers 500), so that
  Kubernetes restarts the container; runs keep moving meanwhile.

With many runs, the next listing waits longer than `--resync-interval` (`resync_delay`:
at most 100 objects listed per second on average, so at rest resync costs the same
whatever the number of runs), and the listing is read one page at a time, keeping of
each object only what it decides on (the whole object only for the few runs a task
drives or that may be adopted).

The decisions are pure (kurable.engine.resync); this module does the I/O; the
liveness probe that reports them is bound to kopf in kurable.handlers.operator.

With kopf's peering, one replica is active and the others stand by, and kopf does
not tell a replica which it is: a standby one would adopt runs and find its (paused)
watch "silent". With --peering, resync therefore only refreshes the runs this
process drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from kurable.api.v1alpha1 import WORKFLOW
from kurable.engine.resync import (
    Delivery,
    Listed,
    Memory,
    Missed,
    resync_delay,
    review,
    serves,
    specific_namespaces,
    unheld,
)

from .actions import RunRef
from .drivers import Drivers, object_logger
from .runtime import Runtime

log = logging.getLogger("kurable.resync")


class Resync:
    """The periodic listing of one operator process, and what it learnt of the watch."""

    def __init__(
        self,
        runtime: Runtime,
        drivers: Drivers,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.drivers = drivers
        self.interval = settings.resync_interval
        """Seconds between two listings, as configured."""
        self.delay = self.interval
        """Seconds before the next listing: `interval`, longer with many runs."""
        self.listed = 0
        """Workflows in the last listing."""
        self.namespaces = list(settings.namespaces)
        """kopf's namespace patterns; empty: cluster-wide."""
        self.adopt = settings.peering is None
        """Adopt runs and judge the watch (off with peering: see the module's doc)."""
        self.deliveries: dict[str, Delivery] = {}
        self.memory = Memory()
        self.missed: dict[str, Missed] = {}
        self.silent_since: float | None = None
        self.resyncs = 0
        self.failures = 0
        self.adoptions = 0
        self.missed_objects = 0
        self.swept = False
        """Whether the journals of runs deleted while no operator watched were forgotten."""
        self._task: asyncio.Task[None] | None = None

    # -- what the watch delivers (from the `wake` event handler) ------------------------

    def delivered(self, uid: str, resource_version: str, event_type: str | None) -> None:
        """kopf's watch delivered an event for Workflow `uid`."""
        if event_type == "DELETED":
            self.deliveries.pop(uid, None)
        else:
            self.deliveries[uid] = Delivery(resource_version, time.monotonic())

    # -- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        """Start listing every `interval` seconds, in the background."""
        self._task = asyncio.create_task(self._loop(), name="kurable-resync")

    async def stop(self) -> None:
        """Stop listing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        log.info(
            "resync every %ss (%s)",
            self.interval,
            "adopting runs and checking the watch" if self.adopt else "refreshing runs only",
        )
        while True:
            await asyncio.sleep(self.delay)
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                log.warning("resync could not list the Workflows (%s: %s)", type(e).__name__, e)
            delay = resync_delay(self.interval, self.listed)
            if delay > self.interval and delay != self.delay:
                log.info("%s Workflows listed: resync every %.0fs", self.listed, delay)
            self.delay = delay

    async def once(self) -> None:
        """List the Workflows, refresh the runs driven here, adopt the undriven ones,
        and judge the watch."""
        listed_at = time.monotonic()
        driven_before = self.drivers.uids()
        versions = {
            uid: _version(driver.driven.body or {})
            for uid in driven_before
            if (driver := self.drivers.get(uid)) is not None
        }
        # Journals read before the listing: a run journaled by then was created by
        # then, so the listing shows it unless it is gone.
        journaled = None if self.swept or not self.adopt else await self.runtime.journal.uids()
        listed: list[Listed] = []
        bodies: dict[str, Mapping[str, Any]] = {}  # whole objects of runs it may adopt
        async for page in self._pages():
            for obj in page:
                item = Listed.from_object(obj)
                listed.append(item)
                if item.uid in driven_before:
                    ref = RunRef(item.name, item.namespace, item.uid)
                    self.drivers.refresh(obj, ref, versions.get(item.uid, ""))
                elif (
                    self.adopt
                    and not (item.finished or item.deleting)
                    and self.runtime.shards.owns(item.uid)
                ):
                    bodies[item.uid] = obj
        self.resyncs += 1
        self.listed = len(listed)
        objects = {item.uid for item in listed}
        if not self.adopt:
            return
        if journaled is not None:
            await self._sweep(journaled, objects)
        driven = driven_before | self.drivers.uids()
        verdict = review(
            listed,
            driven=driven,
            adopted=driven,
            deliveries=self.deliveries,
            memory=self.memory,
            listed_at=listed_at,
            grace=self.delay,
        )
        self.memory = verdict.memory
        self._forget_deliveries(objects, listed_at)
        self._judge_watch(verdict.missed)
        for uid in verdict.abandon:
            await self._abandon(uid, gone=uid not in objects)
        # Only the runs this replica owns (kept in `bodies`; the others are another
        # replica's to drive).
        mine = [c for c in verdict.adopt if c.uid in bodies]
        holders = {c.uid: await self.runtime.fence.holder(c.uid) for c in mine}
        for item in unheld(mine, holders, self.runtime.fence.id):
            self._adopt(bodies[item.uid], item)

    async def _pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The Workflows of the namespaces this operator serves, as kopf would see them,
        one page at a time."""
        if not self.namespaces:
            async for page in self.runtime.list_pages(WORKFLOW, None):
                yield page
            return
        names = specific_namespaces(self.namespaces)
        if names is None:
            names = [n for n in await self.runtime.list_namespaces() if serves(n, self.namespaces)]
        for namespace in names:
            async for page in self.runtime.list_pages(WORKFLOW, namespace):
                yield page

    def _forget_deliveries(self, objects: Collection[str], listed_at: float) -> None:
        """Objects gone before the listing began need no record (their DELETED event may
        never have come: the watch was silent)."""
        for uid, delivery in list(self.deliveries.items()):
            if uid not in objects and delivery.at < listed_at:
                del self.deliveries[uid]

    # -- adopting -------------------------------------------------------------------------

    async def take_owned(self) -> int:
        """The replicas sharing the runs changed: list the Workflows once and start each
        unfinished run this replica owns now and neither drives nor parks (its previous
        owner handed it over, or is gone), without waiting for a whole interval.
        Returns how many it started."""
        started = 0
        async for page in self._pages():
            for obj in page:
                item = Listed.from_object(obj)
                if item.finished or item.deleting:
                    continue
                if self.drivers.get(item.uid) is not None or self.drivers.parked(item.uid):
                    continue
                ref = RunRef(item.name, item.namespace, item.uid)
                if self.drivers.start(obj, ref, object_logger(ref)) is not None:
                    started += 1
        return started

    def _adopt(self, obj: Mapping[str, Any], item: Listed) -> None:
        ref = RunRef(item.name, item.namespace, item.uid)
        logger = object_logger(ref)
        if self.drivers.get(item.uid) is not None or self.drivers.parked(item.uid):
            return  # the watch delivered it meanwhile
        if self.drivers.start(obj, ref, logger) is None:
            return  # not this process's to drive
        self.adoptions += 1
        logger.warning(
            f"adopted: unfinished (phase {item.phase or 'none'}) and not driven for "
            f"{self.interval:.0f}s (the watch did not deliver it); driving it from resync"
        )

    async def _abandon(self, uid: str, gone: bool) -> None:
        driver = self.drivers.get(uid)
        parked = self.drivers.parked(uid)
        ref = driver.driven.ref if driver is not None else parked.ref if parked else None
        if ref is None:
            return
        if not gone:
            await self.drivers.stop(uid)
            log.info("[%s/%s] stopped the run: it is being deleted", ref.namespace, ref.name)
            return
        # Deleted without the watch delivering it: forget it here, once sure it is gone.
        current = await self.runtime.get(WORKFLOW, ref.namespace, ref.name)
        if current is None or current["metadata"]["uid"] != uid:
            await self.drivers.forget(uid)
            deleted = await self.runtime.journal.forget(uid)
            log.info(
                "[%s/%s] stopped the run: its Workflow is gone; removed the journal (%s keys)",
                ref.namespace,
                ref.name,
                deleted,
            )

    async def _sweep(self, journaled: set[str], objects: Collection[str]) -> None:
        """Forget the journals of runs whose Workflow is gone (deleted while no operator
        watched), among those of the namespaces this operator serves. Once per process:
        the watch's DELETED events (and `_abandon`) forget the later ones."""
        forgotten = 0
        for uid in journaled.difference(objects):
            workflow = await self.runtime.journal.workflow_of(uid)
            if workflow is None or not self._serves(workflow.get("namespace", "")):
                continue  # not started (a claim only), or another operator's namespace
            current = await self.runtime.get(WORKFLOW, workflow["namespace"], workflow["name"])
            if current is not None and current["metadata"]["uid"] == uid:
                continue
            await self.runtime.journal.forget(uid)
            forgotten += 1
        self.swept = True
        if forgotten:
            log.info("removed the journals of %s runs deleted while no operator watched", forgotten)

    def _serves(self, namespace: str) -> bool:
        return not self.namespaces or serves(namespace, self.namespaces)

    # -- the watch's health ---------------------------------------------------------------

    def _judge_watch(self, missed: list[Missed]) -> None:
        now = time.monotonic()
        new = [m for m in missed if m.listed.uid not in self.missed]
        self.missed = {m.listed.uid: m for m in missed}
        self.missed_objects += len(new)
        if missed and self.silent_since is None:
            self.silent_since = now
        elif not missed and self.silent_since is not None:
            log.info("the watch delivers again (silent for %.0fs)", now - self.silent_since)
            self.silent_since = None
        if new:
            shown = "; ".join(m.describe() for m in new[:5])
            more = f" (and {len(new) - 5} more)" if len(new) > 5 else ""
            log.error(
                "the watch looks silent: %s%s. Resync keeps the runs moving; the liveness "
                "probe fails so that the operator is restarted",
                shown,
                more,
            )

    def report(self) -> dict[str, Any]:
        """Figures for the liveness endpoint."""
        silent_for = 0.0 if self.silent_since is None else time.monotonic() - self.silent_since
        return {
            "watch": "silent" if self.silent_since is not None else "ok",
            "silentSeconds": round(silent_for),
            "behind": sorted(str(m.listed) for m in self.missed.values()),
            "missedObjects": self.missed_objects,
            "adoptions": self.adoptions,
            "resyncs": self.resyncs,
            "resyncFailures": self.failures,
            "resyncIntervalSeconds": round(self.delay),
        }


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))
